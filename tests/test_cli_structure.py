"""The command line's structure: one table of commands, each a typed function; every config
field a flag of its name whose default lives in the dataclass only; a run's settings reload into
its configs; the eval protocol's clicks defined once."""

from __future__ import annotations

import argparse
import inspect
import re
import shutil
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from sam2prune.cli import COMMANDS, build_parser, main
from sam2prune.cli.common import RETENTION_GRID, AutoTextOptions, MemoryOptions, ModelOptions
from sam2prune.config import ProtocolConfig, PruningConfig, RayConfig
from sam2prune.data.datasets import Sequence
from sam2prune.data.palette import read_label_png
from sam2prune.data.video import VideoSource
from sam2prune.evaluation.protocol import EvalSettings, SequenceTracker, protocol_prompts

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TINY_SIZE

CONFIGS = (PruningConfig, ProtocolConfig, ModelOptions, AutoTextOptions, MemoryOptions, RayConfig)

# the commands that take each dataclass from their flags, and the fields they leave out
FLAGS_OF = {
    PruningConfig: {"segment": (), "eval": (), "bench": (), "sweep": ("auto_text",)},  # no automatic text in a sweep
    ProtocolConfig: {"eval": (), "sweep": ()},
    ModelOptions: dict.fromkeys(("segment", "bench", "eval", "sweep", "prompt", "fit-aligner", "train-router"), ()),
    AutoTextOptions: {"segment": (), "bench": (), "eval": (), "prompt": ()},
    MemoryOptions: {"segment": (), "eval": (), "sweep": ()},  # bench --lengths measures both
    RayConfig: {"eval": (), "sweep": ()},
}

# flags named like a field that do not set that field one to one
NOT_THE_FIELD = {
    ("bench", "--retention"): "several retentions are measured, RETENTION_GRID by default",
    ("sweep", "--retention"): "several retentions are measured, RETENTION_GRID by default",
    ("train-router", "--router"): "which MLP is trained, learned or paper; not the router that scores tokens",
}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {string: action for action in parser._actions for string in action.option_strings if string.startswith("--")}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def help_default(parser: argparse.ArgumentParser, action: argparse.Action) -> str | None:
    """The X of the last "(default: X)" of a flag's help as --help prints it."""
    shown = parser._get_formatter()._expand_help(action)
    found = re.findall(r"\(default: ([^()]*)\)", shown)
    return found[-1] if found else None


def read_as_flag(action: argparse.Action, text: str) -> object:
    """``text`` read as the flag reads its value (a list for a flag of several values)."""
    convert = action.type or str
    return [convert(part) for part in text.split()] if action.nargs == "+" else convert(text)


# --- one table of commands, each a typed function ---------------------------------------------


def test_the_command_table_lists_every_subcommand_and_wires_its_handler():
    parsers = subparsers()
    assert list(parsers) == list(COMMANDS)
    for name, sub in parsers.items():
        assert sub.get_default("handler") is COMMANDS[name].handle, name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_function_is_typed_with_keyword_only_options(name):
    command = COMMANDS[name]
    signature = inspect.signature(command.run)
    assert signature.return_annotation is not inspect.Signature.empty, name
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}: {parameter.name} has no type"
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {parameter.name} is not keyword-only"
    # and so is every other public function of the command's module (handlers included)
    module = sys.modules[command.run.__module__]
    for function_name, function in inspect.getmembers(module, inspect.isfunction):
        if function.__module__ == module.__name__ and not function_name.startswith("_"):
            for parameter in inspect.signature(function).parameters.values():
                assert parameter.annotation is not inspect.Parameter.empty, f"{function_name}: {parameter.name}"


# --- configuration has one source: the dataclass defaults --------------------------------------


@pytest.mark.parametrize(
    "config, command", [(config, command) for config, commands in FLAGS_OF.items() for command in commands]
)
def test_every_config_field_has_a_flag_of_its_name(config, command):
    available = flags(subparsers()[command])
    missing = [
        flag(f.name)
        for f in fields(config)
        if f.name not in FLAGS_OF[config][command] and flag(f.name) not in available
    ]
    assert not missing, f"{command}: {config.__name__} fields without a flag: {missing}"
    for f in fields(config):
        if flag(f.name) in available:
            assert available[flag(f.name)].dest == f.name, (command, f.name)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_flags_of_config_fields_default_to_none_and_quote_the_dataclass_default(command):
    parser = subparsers()[command]
    checked = 0
    for config in CONFIGS:
        defaults = config()
        for f in fields(config):
            action = flags(parser).get(flag(f.name))
            if action is None:
                continue
            default, quoted = getattr(defaults, f.name), help_default(parser, action)
            if (command, flag(f.name)) in NOT_THE_FIELD:
                if f.name == "retention":
                    assert read_as_flag(action, quoted) == list(RETENTION_GRID)
                continue
            checked += 1
            where = f"{command} {flag(f.name)}"
            # None: not given, so the dataclass default applies and an ineffective option can be refused
            assert action.default is None, f"{where}: parser default {action.default!r}"
            if isinstance(default, bool):
                assert default is False and action.nargs == 0 and action.const is True, f"{where}: not an on-switch"
            elif default is not None:
                assert quoted is not None, f"{where}: the help does not say the default {default!r}"
                expected = [default] if action.nargs == "+" else default
                assert read_as_flag(action, quoted) == expected, (
                    f"{where}: help says {quoted!r}, the dataclass {default!r}"
                )
                if action.choices is not None:
                    assert default in action.choices, where
    assert checked or command in ("score", "report", "models")


# --- a run's settings reload ---------------------------------------------------------------------


def _davis_root(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    return root


@pytest.mark.parametrize("method", ["pruned", "sam2"])
def test_run_json_reloads_into_the_settings_the_run_was_made_with(tmp_path, method):
    root = _davis_root(tmp_path)
    out = tmp_path / "run"
    pruning_flags = (
        [
            "--retention",
            "0.5",
            "--signals",
            "visual,uncertainty",
            "--uncertainty-blocks",
            "3,4",
            "--signal-weights",
            "1,0,0.5,0.1",
        ]
        if method == "pruned"
        else []
    )
    assert (
        main(
            [
                "eval",
                "--dataset",
                "davis",
                "--root",
                str(root),
                "--out",
                str(out),
                "--image-size",
                str(TINY_SIZE),
                "--random-weights",
                "--device",
                "cpu",
                "--method",
                method,
                "--refine-below",
                "0.5",
                "--max-rounds",
                "0",
                *pruning_flags,
            ]
        )
        == 0
    )
    pruning = PruningConfig(
        retention=0.5, signals=("visual", "uncertainty"), uncertainty_blocks=(3, 4), signal_weights=(1.0, 0.0, 0.5, 0.1)
    )
    expected = EvalSettings(
        dataset="davis",
        root=str(root.resolve()),
        split="val",
        method=method,
        model="sam2.1_hiera_t",
        checkpoint=None,
        image_size=TINY_SIZE,
        device="cpu",
        pruning=pruning if method == "pruned" else None,
        protocol=ProtocolConfig(refine_below=0.5, max_rounds=0),
    )
    loaded = EvalSettings.load(out / "run.json")
    # tuples compare unequal to the lists JSON gives back, so this also checks they are restored
    assert loaded == expected
    assert isinstance(loaded.protocol, ProtocolConfig)


# --- the eval protocol's clicks are defined once -------------------------------------------------


def test_protocol_prompts_are_the_clicks_the_tracker_makes(tiny_predictor, monkeypatch):
    labels = {}
    for i in range(6):
        labels[i] = read_label_png(CHAIR_MASKS / f"{i:05d}.png").copy()
        if i >= 2:
            labels[i][20:120, 30:200] = 2  # a second object, visible from frame 2 on
    sequence = Sequence(
        "two", VideoSource.open(CHAIR_FRAMES), {i: (lambda i=i: labels[i]) for i in range(6)}, [1, 2], {1: 0, 2: 2}
    )
    clicks = []
    original = tiny_predictor.add_new_points_or_box

    def recorded(state, frame_idx, obj_id, *, points, labels, **kwargs):
        clicks.append((frame_idx, obj_id, tuple(map(tuple, points)), tuple(labels)))
        return original(state, frame_idx, obj_id, points=points, labels=labels, **kwargs)

    monkeypatch.setattr(tiny_predictor, "add_new_points_or_box", recorded)
    SequenceTracker(tiny_predictor, sequence, ProtocolConfig(max_rounds=0)).run()
    prompts = protocol_prompts(sequence)
    assert [(p.frame, p.obj_id, p.points, p.labels) for p in prompts] == clicks
    assert [(p.frame, p.obj_id) for p in prompts] == [(0, 1), (2, 2)]
    x, y = prompts[1].points[0]
    assert labels[2][y, x] == 2


def test_no_command_shows_the_commands_and_an_unknown_option_the_commands_usage(capsys):
    """``sam2prune`` alone prints what it does and its commands (not only "COMMAND is
    required"); an option a command does not know is named with that command's usage."""
    assert main([]) == 2
    shown = capsys.readouterr().err
    assert "Token-pruned SAM 2 video object segmentation." in shown
    assert all(name in shown for name in COMMANDS)
    with pytest.raises(SystemExit) as stopped:
        main(["segment", "--out", "somewhere", "--size", "256"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: sam2prune segment ") and "unrecognized arguments: --size" in error
    # an abbreviation is not taken for the option it begins (`bench --method` for --methods)
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--method", "x", "--frames", "10"])
    assert stopped.value.code == 2 and "unrecognized arguments: --method" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["--bogus"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "unrecognized arguments: --bogus; a COMMAND is required (one of segment, " in error
