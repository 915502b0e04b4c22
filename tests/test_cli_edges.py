"""The command line at its edges: outputs that never destroy or half-write anything, results only
from real weights (or explicitly random ones), options that do nothing refused, clear one-line
errors, and the conventions users expect (--version, models, examples in --help)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
import torch

from sam2prune import cli
from sam2prune.cli import main

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TINY_SIZE, build_random, last_error, snapshot

TINY = ["--image-size", str(TINY_SIZE)]
RANDOM = [*TINY, "--random-weights"]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is built: the error must come before any heavy work."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr("sam2prune.models.build_predictor", refuse)


# --- --out never destroys inputs --------------------------------------------------------------


@pytest.mark.parametrize(
    "where, relation",
    [("same", "is the input VIDEO"), ("inside", "lies inside the input VIDEO"), ("parent", "contains the input VIDEO")],
)
def test_segment_out_overlapping_the_video_is_refused(tmp_path, chair_copy, capsys, no_model, where, relation):
    out = {"same": chair_copy, "inside": chair_copy / "masks", "parent": tmp_path}[where]
    before = snapshot(tmp_path)
    assert main(["segment", str(chair_copy), "--point", "300,250", "--out", str(out), "--overwrite", *RANDOM]) == 2
    assert relation in last_error(capsys)
    assert snapshot(tmp_path) == before


def test_segment_out_overlapping_the_prompts_file_is_refused(tmp_path, capsys, no_model):
    out = tmp_path / "out"
    out.mkdir()
    prompts = out / "prompts.json"
    prompts.write_text(json.dumps({"objects": [{"obj_id": 1, "frame": 0, "points": [[300, 250]], "labels": [1]}]}))
    assert (
        main(["segment", str(CHAIR_FRAMES), "--prompts", str(prompts), "--out", str(out), "--overwrite", *RANDOM]) == 2
    )
    assert "contains the input --prompts" in last_error(capsys)
    assert prompts.is_file()


def test_eval_out_overlapping_the_dataset_root_is_refused(tmp_path, capsys, no_model):
    root = tmp_path / "DAVIS"
    (root / "Annotations" / "480p").mkdir(parents=True)
    before = snapshot(tmp_path)
    assert (
        main(["eval", "--dataset", "davis", "--root", str(root), "--out", str(root / "run"), "--overwrite", *RANDOM])
        == 2
    )
    assert "lies inside the input --root" in last_error(capsys)
    assert main(["sweep", "--dataset", "davis", "--root", str(root), "--out", str(tmp_path), *RANDOM]) == 2
    assert "contains the input --root" in last_error(capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["segment", "eval", "bench", "fit-aligner"])
def test_a_bad_image_size_is_refused_before_the_model_is_built(tmp_path, capsys, no_model, command):
    arguments = {
        "segment": ["--out", str(tmp_path / "out")],
        "eval": ["--dataset", "davis", "--root", str(tmp_path), "--out", str(tmp_path / "run")],
        "bench": [],
        "fit-aligner": [
            *("--dataset", "davis", "--root", str(tmp_path), "--labels", str(tmp_path / "l.json")),
            *("--out", str(tmp_path / "a.pt")),
        ],
    }[command]
    for size in ("100", "0", "-64"):
        assert main([command, *arguments, "--image-size", size, "--random-weights"]) == 2
        assert f"--image-size must be a multiple of 32 and >= 64, got {size}" in last_error(capsys)
    assert not list(tmp_path.iterdir())


def test_eval_refuses_a_folder_holding_no_run_before_the_model_is_built(tmp_path, capsys, no_model):
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "run.json").write_text('{"experiment": "mine"}')
    command = ["eval", "--dataset", "davis", "--root", str(root), "--sequences", "chair", "--out", str(busy)]
    assert main([*command, "--overwrite", *RANDOM]) == 2
    assert f"--out {busy} is a non-empty folder that holds no sam2prune run" in last_error(capsys)
    assert (busy / "run.json").read_text() == '{"experiment": "mine"}'


@pytest.mark.parametrize("out", [".", "..", "{cwd}"])
def test_segment_out_that_is_the_current_folder_is_refused_before_any_work(
    tmp_path, monkeypatch, capsys, no_model, out
):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    out = out.format(cwd=work)
    assert main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", out, "--overwrite", *RANDOM]) == 2
    assert "is the current folder or contains it" in last_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("command", ["segment", "eval"])
def test_unwritable_out_is_one_line_before_any_model(tmp_path, capsys, no_model, command):
    out = "/sys/kernel/sam2prune-out"
    if command == "segment":
        arguments = ["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", out, *RANDOM]
    else:
        arguments = ["eval", "--dataset", "davis", "--root", str(tmp_path), "--out", out, *RANDOM]
    assert main(arguments) == 2
    assert "cannot write into /sys/kernel" in last_error(capsys)


def test_report_and_bench_outputs_into_missing_folders_are_refused(tmp_path, capsys, no_model):
    run = str(tmp_path / "run")
    assert main(["report", run, "--out", str(tmp_path / "no" / "t.md")]) == 2
    assert f"--out {tmp_path / 'no' / 't.md'}: folder {tmp_path / 'no'} does not exist" in last_error(capsys)
    assert main(["report", run, "--plot", str(tmp_path / "no" / "t.png")]) == 2
    assert "--plot" in last_error(capsys)
    assert main(["bench", "--json", str(tmp_path / "no" / "b.json"), *TINY]) == 2
    assert "--json" in last_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_in_a_missing_folder_says_how_to_make_it(tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DAVIS").mkdir()
    for command in (["segment", "--point", "1,1"], ["eval", "--dataset", "davis", "--root", "DAVIS"]):
        assert main([*command, "--out", "runs/a b/r", *RANDOM]) == 2
        assert "--out runs/a b/r: parent folder runs/a b does not exist (create it first: mkdir -p 'runs/a b')" in (
            last_error(capsys)
        )
    assert [p.name for p in tmp_path.iterdir()] == ["DAVIS"]


def _run_report(folder: Path, *, retention: float, jf: float) -> Path:
    """A run folder as `eval` leaves it, as far as `report` reads it."""
    folder.mkdir(parents=True)
    settings = {"dataset": "davis", "method": "pruned", "model": "sam2.1_hiera_t", "checkpoint": None}
    settings["pruning"] = {"retention": retention, "scorer": "prior"}
    overall = {"J-Mean": jf, "F-Mean": jf, "J&F-Mean": jf, "fps": 2.0, "peak_memory_mib": 900.0}
    overall |= {"memory_kind": "rss", "memory_bank_bytes_per_frame": 4096, "kept_fraction": retention}
    overall |= {"refinement_rounds": 0, "clicks": 1}
    (folder / "report.json").write_text(json.dumps({"settings": settings, "overall": overall}))
    return folder


def test_report_never_overwrites_a_run_or_an_existing_file(tmp_path, capsys):
    run = _run_report(tmp_path / "run", retention=0.3, jf=0.5)
    before = snapshot(run)
    for option, target in (("--out", run / "report.json"), ("--plot", run / "t.png"), ("--out", run / "t.md")):
        assert main(["report", str(run), option, str(target)]) == 2
        assert f"{option} {target} " in (error := last_error(capsys)) and "the input RUN_DIR" in error
    existing = tmp_path / "frame.png"
    existing.write_bytes(b"the user's")
    assert main(["report", str(run), "--plot", str(existing)]) == 2
    assert f"--plot {existing} exists; pass --overwrite to replace it" in last_error(capsys)
    assert existing.read_bytes() == b"the user's"
    assert main(["report", str(run), "--plot", str(tmp_path / "t.jpg")]) == 2
    assert "the plot is a PNG image; name it FILE.png" in last_error(capsys)
    assert main(["report", str(run), "--out", str(tmp_path / "a.png"), "--plot", str(tmp_path / "a.png")]) == 2
    assert "--out and --plot are the same file" in last_error(capsys)
    table = tmp_path / "t.md"
    table.write_text("old")
    assert main(["report", str(run), "--out", str(table), "--overwrite"]) == 0
    assert "| davis | pruned r=0.3 prior (sam2.1_hiera_t) |" in table.read_text()
    assert snapshot(run) == before


def test_report_of_a_sweep_folder_or_a_file_says_what_to_pass(tmp_path, capsys):
    _run_report(tmp_path / "sweep" / "sam2", retention=1.0, jf=0.5)
    _run_report(tmp_path / "sweep" / "pruned_r0.3", retention=0.3, jf=0.5)
    (tmp_path / "sweep" / "report.md").write_text("table")
    assert main(["report", str(tmp_path / "sweep")]) == 2
    assert f"holds runs (pruned_r0.3, sam2): pass them, e.g. {tmp_path / 'sweep'}/*/" in last_error(capsys)
    assert main(["report", str(tmp_path / "sweep" / "report.md")]) == 2
    assert "report.md is a file; expected a run folder" in last_error(capsys)
    with pytest.raises(SystemExit, match="2"):
        main(["report", str(tmp_path / "sweep" / "sam2"), "--out", ""])
    assert "argument --out: expected a path, got an empty string" in capsys.readouterr().err


def test_report_names_a_broken_or_missing_report_and_lists_a_run_named_twice_once(tmp_path, capsys):
    run = _run_report(tmp_path / "run", retention=0.3, jf=0.5)
    assert main(["report", str(run), str(tmp_path / "run" / ".")]) == 0
    assert sum(line.startswith("| davis |") for line in capsys.readouterr().out.splitlines()) == 1
    report = json.loads((run / "report.json").read_text())
    for broken, message in (
        ({}, "is not a report of `sam2prune eval` (no settings)"),
        ([], "is not a report of `sam2prune eval` (no settings)"),
        (
            {**report, "overall": {k: v for k, v in report["overall"].items() if k != "fps"}},
            "lacks overall.fps: not a report",
        ),
        (
            {**report, "overall": {**report["overall"], "J&F-Mean": None}},
            "overall.J&F-Mean (null) should be a number: edited, or damaged",
        ),
        (
            {
                **report,
                "settings": {**report["settings"], "pruning": {**report["settings"]["pruning"], "retention": "0.3"}},
            },
            'settings.pruning.retention ("0.3") should be a number: edited, or damaged',
        ),
        (
            {**report, "settings": {**report["settings"], "dataset": None}},
            "settings.dataset (null) should be a string: edited, or damaged",
        ),
    ):
        (run / "report.json").write_text(json.dumps(broken))
        assert main(["report", str(run)]) == 2
        assert message in last_error(capsys)
    pruned = {**report, "settings": {**report["settings"], "pruning": {"retention": 0.3}}}
    (run / "report.json").write_text(json.dumps(pruned))
    assert main(["report", str(run)]) == 2
    assert "lacks settings.pruning.scorer" in last_error(capsys)
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: folder does not exist" in last_error(capsys)


def test_report_tells_apart_runs_that_share_a_label(tmp_path, capsys):
    """Two runs of one setting (e.g. on other sequences) get their folders in the label, in both
    tables, instead of one hiding the other."""
    first = _run_report(tmp_path / "a", retention=0.3, jf=0.5)
    second = _run_report(tmp_path / "b", retention=0.3, jf=0.25)
    other = _run_report(tmp_path / "c", retention=0.5, jf=0.75)
    plot = tmp_path / "t.png"
    assert main(["report", str(first), str(second), str(other), "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    assert f"| davis | pruned r=0.3 prior (sam2.1_hiera_t) [{first}] | 0.500 |" in table
    assert f"| davis | pruned r=0.3 prior (sam2.1_hiera_t) [{second}] | 0.250 |" in table
    assert "| davis | pruned r=0.5 prior (sam2.1_hiera_t) | 0.750 |" in table
    by_dataset = table.split("J&F by method and dataset:")[1]
    assert f"[{first}] | 0.500 |" in by_dataset and f"[{second}] | 0.250 |" in by_dataset
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_score_creates_its_out_folder_and_names_a_missing_results_folder(tmp_path, capsys):
    gt_root = tmp_path / "gt"
    shutil.copytree(CHAIR_MASKS, gt_root / "Annotations" / "480p" / "chair")
    (gt_root / "ImageSets" / "2017").mkdir(parents=True)
    (gt_root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    results = gt_root / "Annotations" / "480p"
    assert main(["score", "--gt-root", str(gt_root), "--results", str(tmp_path / "nores")]) == 2
    error = last_error(capsys)
    assert f"--results {tmp_path / 'nores'}: folder does not exist" in error and "--out" not in error
    out = tmp_path / "scores"
    assert main(["score", "--gt-root", str(gt_root), "--results", str(results), "--out", str(out)]) == 0
    assert (out / "global_results-val.csv").is_file()


def test_score_replaces_no_file_without_overwrite_and_writes_nothing_among_the_ground_truth(tmp_path, capsys):
    """The CSVs and summary.json where --out (or the results folder, the default) holds them
    already (an eval run folder, a user's own summary.json) need --overwrite; --out inside
    --gt-root (also by default, results there) is refused: nothing is written."""
    gt_root = tmp_path / "gt"
    shutil.copytree(CHAIR_MASKS, gt_root / "Annotations" / "480p" / "chair")
    (gt_root / "ImageSets" / "2017").mkdir(parents=True)
    (gt_root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    results = tmp_path / "results"
    shutil.copytree(CHAIR_MASKS, results / "chair")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"important": true}')
    command = ["score", "--gt-root", str(gt_root), "--results", str(results)]
    assert main([*command, "--out", str(mine)]) == 2
    assert f"--out {mine} holds summary.json already; pass --overwrite" in last_error(capsys)
    assert sorted(p.name for p in mine.iterdir()) == ["summary.json"]
    assert (mine / "summary.json").read_text() == '{"important": true}'
    assert main(command) == 0
    (results / "global_results-val.csv").write_text("a run's own scores")
    assert main(command) == 2
    assert "the default --out) holds global_results-val.csv, per-sequence_results-val.csv, summary.json" in (
        last_error(capsys)
    )
    assert (results / "global_results-val.csv").read_text() == "a run's own scores"
    assert main([*command, "--overwrite"]) == 0
    assert (results / "global_results-val.csv").read_text().startswith("J&F-Mean")
    inside = gt_root / "Annotations" / "480p" / "chair"
    before = sorted(p.name for p in inside.iterdir())
    assert main([*command, "--out", str(inside), "--overwrite"]) == 2
    assert "lies inside --gt-root" in last_error(capsys)
    assert main(["score", "--gt-root", str(gt_root), "--results", str(gt_root / "Annotations" / "480p")]) == 2
    assert "the default --out) lies inside --gt-root" in last_error(capsys)
    assert sorted(p.name for p in inside.iterdir()) == before
    assert not list((gt_root / "Annotations" / "480p").glob("*.csv"))


def test_score_refuses_a_missing_sequence_list_instead_of_scoring_every_folder(tmp_path, capsys):
    gt_root = tmp_path / "gt"
    shutil.copytree(CHAIR_MASKS, gt_root / "Annotations" / "480p" / "chair")
    (gt_root / "ImageSets" / "2017").mkdir(parents=True)
    (gt_root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    results = str(gt_root / "Annotations" / "480p")
    out = tmp_path / "scores"
    assert main(["score", "--gt-root", str(gt_root), "--results", results, "--set", "test-dev", "--out", str(out)]) == 2
    error = last_error(capsys)
    assert "--set test-dev: sequence list" in error and "lists there: val" in error
    # --split, as eval names it, is the same option
    assert main(["score", "--gt-root", str(gt_root), "--results", results, "--split", "test", "--out", str(out)]) == 2
    assert "--set test: sequence list" in last_error(capsys)
    assert (
        main(["score", "--gt-root", str(gt_root), "--results", results, "--sequences", "nope", "--out", str(out)]) == 2
    )
    assert "--sequences: nope not in" in last_error(capsys)
    assert not out.exists()


def test_stale_temporaries_of_a_killed_run_are_cleaned_and_live_ones_kept(tmp_path):
    dead_pid = 2**22 + 12345  # above pid_max's default: no such process
    stale = tmp_path / f".out.tmp-{dead_pid}-abc"
    stale.mkdir()
    (stale / "00000.png").write_bytes(b"partial")
    live = tmp_path / ".out.tmp-1-xyz"  # pid 1 is alive
    live.mkdir()
    other = tmp_path / ".other.tmp-12-abc"  # another output's: not ours to judge
    other.mkdir()
    assert main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", str(tmp_path / "out"), *RANDOM]) == 0
    assert not stale.exists() and live.is_dir() and other.is_dir()
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


def test_sigterm_stops_a_run_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    """``kill`` (SIGTERM, as job schedulers send) cleans up as Ctrl-C does: exit 143, no output,
    no temporary folder; the handler that was there before is put back."""
    import signal

    from sam2prune import segment as segment_module

    label = segment_module.label_tensor
    calls = []

    def killed_on_the_third_frame(obj_ids, logits):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return label(obj_ids, logits)

    monkeypatch.setattr(segment_module, "label_tensor", killed_on_the_third_frame)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", str(out), *RANDOM]) == 143
    assert "sam2prune: terminated" in capsys.readouterr().err
    assert len(calls) < 6 and not out.exists() and not list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGTERM) is before

    def ray_handler_on_the_third_frame(obj_ids, logits):  # Ray's driver exits with the signal's number
        calls.append(1)
        if len(calls) == 3:
            raise SystemExit(signal.SIGTERM)
        return label(obj_ids, logits)

    calls.clear()
    monkeypatch.setattr(segment_module, "label_tensor", ray_handler_on_the_third_frame)
    assert main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", str(out), *RANDOM]) == 143
    assert "sam2prune: terminated" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_outputs_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "out"
        assert (
            main(
                [
                    "segment",
                    str(CHAIR_FRAMES),
                    "--point",
                    "300,250",
                    "--out",
                    str(out),
                    "--overlay",
                    str(tmp_path / "o.gif"),
                    *RANDOM,
                ]
            )
            == 0
        )
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}
    assert stat.S_IMODE((tmp_path / "o.gif").stat().st_mode) == 0o644


# --- results need real weights ----------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        ["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", "{tmp}/out"],
        ["eval", "--dataset", "davis", "--root", "{root}", "--out", "{tmp}/out"],
        ["sweep", "--dataset", "davis", "--root", "{root}", "--out", "{tmp}/out"],
        ["prompt", str(CHAIR_FRAMES), "--point", "300,250", "--captioner", "{tmp}/captioner"],
        ["fit-aligner", "--root", "{root}", "--labels", "{tmp}/labels.json", "--out", "{tmp}/a.pt"],
        ["train-router", "--root", "{root}", "--out", "{tmp}/r.pt"],
    ],
)
def test_results_without_a_checkpoint_are_refused(tmp_path, monkeypatch, capsys, no_model, arguments):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"chair/1": "a chair"}))
    root = tmp_path / "DAVIS"
    root.mkdir()
    filled = [a.format(tmp=tmp_path, root=root) for a in arguments]
    before = snapshot(tmp_path)
    assert main([*filled, *TINY]) == 2
    error = last_error(capsys)
    assert "no checkpoint given for sam2.1_hiera_t" in error
    assert "sam2.1_hiera_tiny.pt" in error and "https://dl.fbaipublicfiles.com/segment_anything_2/092824/" in error
    assert "--random-weights" in error and "./checkpoints/" in error
    assert snapshot(tmp_path) == before


def test_fit_aligner_names_labels_that_match_no_object_before_building_the_model(tmp_path, capsys, no_model):
    from sam2prune.data.datasets import read_dataset
    from sam2prune.scorers.router.semantic import unmatched_labels

    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"chair/2": "a chair", "bear/1": "a bear"}))
    command = ["fit-aligner", "--root", str(root), "--sequences", "chair", "--labels", str(labels)]
    assert main([*command, "--out", str(tmp_path / "a.pt"), "--random-weights", *TINY]) == 2
    assert (
        f"--labels {labels}: no label names an object of the dataset: chair/2 (chair's objects: 1); "
        in (error := last_error(capsys))
        and "bear/1 (no sequence bear among those --sequences selected)" in error
    )
    assert not (tmp_path / "a.pt").exists()
    sequences = list(read_dataset("davis", root, None, only=["chair"]))
    # as the fit matches them: the id as written ("01" is no object's)
    assert unmatched_labels(sequences, {"chair/1": "a chair", "chair/01": "a chair", "bear/1": "a bear"}) == [
        "chair/01 (chair's objects: 1)",
        "bear/1 (no sequence bear)",
    ]
    for option, value, expected in (("--ridge", "-1", "--ridge must be >= 0, got -1"), ("--frame-step", "0", "got 0")):
        assert main([*command, "--out", str(tmp_path / "a.pt"), option, value, "--random-weights", *TINY]) == 2
        assert expected in last_error(capsys)


@pytest.mark.parametrize("command", ["fit-aligner", "train-router"])
def test_a_fit_never_writes_over_its_inputs_or_an_existing_file(tmp_path, capsys, no_model, command):
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"chair/1": "a chair"}))
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    checkpoint.write_bytes(b"weights")
    aligner = tmp_path / "aligner.pt"
    aligner.write_bytes(b"an aligner")
    read = ["--root", str(root), "--labels", str(labels), "--checkpoint", str(checkpoint)]
    read += ["--aligner", str(aligner)] if command == "train-router" else []
    before = snapshot(tmp_path)
    targets = [labels, root / "JPEGImages" / "480p" / "chair" / "00000.jpg", checkpoint]
    targets += [aligner] if command == "train-router" else []
    for target in targets:
        assert main([command, *read, "--out", str(target), *TINY]) == 2
        assert f"--out {target} " in (error := last_error(capsys)) and "the input --" in error
    existing = tmp_path / "earlier.pt"
    existing.write_bytes(b"a fit of hours")
    assert main([command, *read, "--out", str(existing), *TINY]) == 2
    assert f"--out {existing} exists; pass --overwrite to replace it" in last_error(capsys)
    assert snapshot(tmp_path) == {**before, "earlier.pt": b"a fit of hours"}


def test_a_checkpoint_in_checkpoints_is_found_and_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": build_random(seed=3).state_dict()}, tmp_path / "checkpoints" / "sam2.1_hiera_tiny.pt")
    assert main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", str(tmp_path / "out"), *TINY]) == 0
    err = capsys.readouterr().err
    assert "loading checkpoint checkpoints/sam2.1_hiera_tiny.pt (found in ./checkpoints/)" in err
    assert "RANDOM" not in err
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith("sam2.1_hiera_t "))
    size = (tmp_path / "checkpoints" / "sam2.1_hiera_tiny.pt").stat().st_size / 2**20
    assert row.split() == ["sam2.1_hiera_t", "sam2.1_hiera_tiny.pt", "1024", "px", "found", f"({size:.0f}", "MiB)"]
    other = next(line for line in listing.splitlines() if line.startswith("sam2.1_hiera_l "))
    assert other.split()[-1] == "-"
    (tmp_path / "checkpoints" / "sam2.1_hiera_large.pt").write_bytes(b"")  # a download that stopped at once
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("sam2.1_hiera_l "))
    assert row.endswith("found, but 0 bytes: an incomplete download?")


def test_random_weights_are_said_and_exclusive(tmp_path, capsys, no_model):
    assert (
        main(
            [
                "segment",
                str(CHAIR_FRAMES),
                "--point",
                "1,1",
                "--out",
                str(tmp_path / "o"),
                "--random-weights",
                "--checkpoint",
                str(tmp_path / "x.pt"),
                *TINY,
            ]
        )
        == 2
    )
    assert "--checkpoint and --random-weights exclude each other" in last_error(capsys)
    assert (
        main(
            [
                "segment",
                str(CHAIR_FRAMES),
                "--point",
                "1,1",
                "--out",
                str(tmp_path / "o"),
                "--checkpoint",
                str(tmp_path / "x.pt"),
                *TINY,
            ]
        )
        == 2
    )
    assert f"--checkpoint {tmp_path / 'x.pt'} does not exist" in last_error(capsys)
    (tmp_path / "weights").mkdir()
    argv = ["segment", str(CHAIR_FRAMES), "--point", "1,1", "--out", str(tmp_path / "o"), *TINY]
    assert main([*argv, "--checkpoint", str(tmp_path / "weights")]) == 2
    assert f"--checkpoint {tmp_path / 'weights'} is a folder; expected a checkpoint file (.pt)" in last_error(capsys)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is not a checkpoint" * 20, "(0.0 MiB) is not a PyTorch checkpoint file"),
        (b"", "bad.pt is empty (0 bytes) (expected an official SAM 2 checkpoint"),
        ("objects", "holds Python objects besides tensors"),
    ],
)
def test_unusable_checkpoints_are_explained_without_torch_advice(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.pt"
    if content == "objects":
        torch.save({"model": {"weight": torch.zeros(1)}, "extra": Path("x")}, path)
    else:
        path.write_bytes(content)
    assert (
        main(
            [
                "segment",
                str(CHAIR_FRAMES),
                "--point",
                "1,1",
                "--out",
                str(tmp_path / "o"),
                "--checkpoint",
                str(path),
                *TINY,
            ]
        )
        == 2
    )
    error = last_error(capsys)
    assert expected in error and "weights_only=False" not in error and "file an issue" not in error


# --- no tracebacks, options that change nothing refused ---------------------------------------


def test_bench_with_a_one_frame_warmup_runs(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--frames", "9", "--warmup", "1", "--retention", "0.5", "--json", str(out), *TINY]) == 0
    result = json.loads(out.read_text())
    assert result["warmup_frames"] == 1 and result["frames"] == 9
    # the median of one steady frame is said to be one
    assert "ms/frame is the median of 1 steady-state frame only; pass --frames 13 or more" in capsys.readouterr().err


def test_bench_frames_too_few_is_refused_before_any_model(capsys, no_model):
    assert main(["bench", "--frames", "8", *TINY]) == 2
    assert "need more than 8 frames" in last_error(capsys)
    assert main(["bench", "--warmup", "0", *TINY]) == 2
    assert "--warmup must be >= 1" in last_error(capsys)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--method", "sam2", "--retention", "0.5"], "--retention has no effect with --method sam2"),
        (
            ["--method", "sam2", "--scorer", "prior", "--fill", "raw"],
            "--scorer, --fill have no effect with --method sam2",
        ),
        (
            ["--scorer", "prior", "--router", "paper"],
            "--router has no effect here (--router is for --scorer router, and the scorer is prior)",
        ),
        (["--scorer", "uniform", "--prior-dilation", "3"], "--prior-dilation has no effect here"),
        (["--scorer", "prior", "--seed", "3"], "--seed has no effect here"),
        (["--mc-passes", "3"], "Monte-Carlo passes are drawn with --uncertainty mc only"),
        (["--router-weights", "r.pt"], "the default router has no weights"),
        (
            ["--signals", "prior,visual", "--mc-dropout-p", "0.2"],
            "the uncertainty signal is not among the router's --signals",
        ),
        (["--fps", "5"], "--fps is the frame rate of the --overlay video"),
        (["--captioner", "blip"], "--captioner is used by --auto-text only"),
        (["--aligner", "a.pt"], "--aligner has no effect here (the router has a text signal only with --text or"),
        (["--signals", "visual,prior", "--text", "a chair"], "the text signal is not among the router's --signals"),
    ],
)
def test_options_without_effect_are_refused(tmp_path, capsys, no_model, extra, expected):
    assert (
        main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", str(tmp_path / "o"), *extra, *RANDOM]) == 2
    )
    assert expected in last_error(capsys)
    assert list(tmp_path.iterdir()) == []


def _tiny_davis(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    return root


@pytest.mark.parametrize("command", ["eval", "sweep"])
def test_ray_options_without_ray_name_the_extra_to_install(tmp_path, capsys, monkeypatch, no_model, command):
    root = _tiny_davis(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    arguments = [command, "--dataset", "davis", "--root", str(root), "--out", str(tmp_path / "run"), *RANDOM]
    assert main([*arguments, "--workers", "2"]) == 2
    assert "pip install 'sam2prune[ray]'" in last_error(capsys)
    assert main([*arguments, "--ray-address", "10.0.0.1:6379"]) == 2
    assert "pip install 'sam2prune[ray]'" in last_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--threads-per-worker", "2"], "--threads-per-worker is for a run on Ray workers; add --workers N"),
        (
            ["--gpus-per-worker", "0.5", "--max-retries", "2"],
            "--gpus-per-worker, --max-retries are for a run on Ray workers",
        ),
        (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
        (["--workers", "2", "--gpus-per-worker", "1.5"], "--gpus-per-worker above 1 must be a whole number"),
        (["--workers", "2", "--max-retries", "-1"], "--max-retries must be an integer >= 0"),
        (["--workers", "2", "--threads", "2"], "give Ray workers theirs with --threads-per-worker"),
    ],
)
def test_ray_worker_options_are_checked_before_any_work(tmp_path, capsys, no_model, extra, expected):
    root = _tiny_davis(tmp_path)
    arguments = ["eval", "--dataset", "davis", "--root", str(root), "--out", str(tmp_path / "run"), *RANDOM]
    assert main([*arguments, *extra]) == 2
    assert expected in last_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["segment", "eval", "sweep"])
def test_threads_set_torchs_cpu_threads_for_the_run_only(tmp_path, capsys, monkeypatch, command):
    seen = []
    run = {"segment": "sam2prune.cli.segment.segment", "eval": "sam2prune.cli.eval.evaluate"}
    monkeypatch.setattr(
        run.get(command, "sam2prune.cli.sweep.sweep"), lambda **kwargs: seen.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    arguments = {
        "segment": ["segment", "--out", str(tmp_path / "out")],
        "eval": ["eval", "--dataset", "davis", "--root", str(tmp_path), "--out", str(tmp_path / "run")],
        "sweep": ["sweep", "--dataset", "davis", "--root", str(tmp_path), "--out", str(tmp_path / "run")],
    }[command]
    assert main([*arguments, *RANDOM, "--threads", str(before + 1)]) == 0
    assert seen == [before + 1] and torch.get_num_threads() == before
    assert main([*arguments, *RANDOM, "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in last_error(capsys)


def test_sweep_refuses_a_single_and_a_plural_option_together(tmp_path, capsys, no_model):
    root = tmp_path / "DAVIS"
    root.mkdir()
    assert (
        main(
            [
                "sweep",
                "--dataset",
                "davis",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "s"),
                "--scorer",
                "prior",
                "--scorers",
                "uniform",
                *RANDOM,
            ]
        )
        == 2
    )
    assert "--scorer and --scorers exclude each other" in last_error(capsys)
    assert (
        main(
            [
                "sweep",
                "--dataset",
                "davis",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "s"),
                "--scorers",
                "prior",
                "--router",
                "paper",
                *RANDOM,
            ]
        )
        == 2
    )
    assert "--router has no effect here" in last_error(capsys)
    sweep = ["sweep", "--dataset", "davis", "--root", str(root), "--out", str(tmp_path / "s"), *RANDOM]
    assert main([*sweep, "--scorers", "prior", "--signal-sets", "visual", "--no-baseline"]) == 2
    assert "--signal-sets varies the router's inputs: no effect without router among the scorers (prior)" in last_error(
        capsys
    )
    assert main([*sweep, "--scorers", "router", "--texts", "a chair", " ", "--no-baseline"]) == 2
    assert "error: --texts must not be empty" in last_error(capsys)  # the option given, not --text


def test_prompt_errors_name_the_prompt_command_options(tmp_path, capsys, no_model):
    assert main(["prompt", str(CHAIR_FRAMES), "--box", "10,10,200,200"]) == 2
    error = last_error(capsys)
    assert "`prompt` needs --captioner MODEL" in error and "--auto-text" not in error
    assert main(["prompt", "--caption", "a dog", str(CHAIR_FRAMES)]) == 2
    assert "with --caption only the refiner runs: VIDEO has no effect" in last_error(capsys)
    assert main(["prompt", str(CHAIR_FRAMES), "--box", "10,10,200,200", "--point", "5,5", "--captioner", "x"]) == 2
    assert "--box is the region itself: --point would have no effect with it" in last_error(capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mc-passes", "3"], "--mc-passes has no effect on a learned router of visual,uncertainty,prior"),
        (["--signals", "visual,prior", "--mc-dropout-p", "0.2"], "--mc-dropout-p has no effect on a learned router"),
        (["--aligner", "{tmp}/a.pt"], "--aligner has no effect on a learned router of visual,uncertainty,prior"),
        (["--router", "paper"], "the text signal (the paper router reads it unless --signals leaves it out) needs"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--router", "paper", "--signals", "visual,prior"], "router options: the paper router has no prior input"),
        (["--learning-rate", "-1"], "--learning-rate must be > 0, got -1.0"),
    ],
)
def test_train_router_refuses_options_that_change_nothing(tmp_path, capsys, no_model, extra, message):
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    extra = [part.replace("{tmp}", str(tmp_path)) for part in extra]
    assert main(["train-router", "--root", str(root), "--out", str(tmp_path / "r.pt"), *extra, *TINY]) == 2
    assert message in last_error(capsys)


def test_train_router_without_held_out_examples_is_refused(tmp_path, capsys):
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    out = tmp_path / "r.pt"
    assert (
        main(
            [
                "train-router",
                "--root",
                str(root),
                "--out",
                str(out),
                "--signals",
                "visual,prior",
                "--holdout-every",
                "7",
                *RANDOM,
            ]
        )
        == 2
    )
    assert "no held-out example" in last_error(capsys)
    assert not out.exists()


# --- conventions ------------------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from importlib.metadata import version

    import sam2prune

    assert capsys.readouterr().out.strip() == f"sam2prune {sam2prune.__version__} (sam2 {version('sam2')})"


def test_every_command_has_an_example_and_every_option_a_help():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) >= {
        "segment",
        "bench",
        "score",
        "eval",
        "report",
        "sweep",
        "prompt",
        "fit-aligner",
        "train-router",
        "models",
    }
    for name, sub in subparsers.choices.items():
        assert sub.description, name
        assert f"example:\n  sam2prune {name}" in sub.epilog, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"


def test_verbose_logs_the_resolved_settings(tmp_path, capsys):
    assert (
        main(
            [
                "-v",
                "segment",
                str(CHAIR_FRAMES),
                "--point",
                "300,250",
                "--out",
                str(tmp_path / "o"),
                "--scorer",
                "prior",
                *RANDOM,
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert (
        "sam2prune: model sam2.1_hiera_t, image size 128, device cpu, pruning PruningConfig(retention=0.3, scorer='prior'"
        in err
    )
    assert main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--out", str(tmp_path / "o2"), *RANDOM]) == 0
    assert "pruning PruningConfig" not in capsys.readouterr().err
    # -v after the command's name too
    assert main(["segment", "-v", str(CHAIR_FRAMES), "--point", "300,250", "--out", str(tmp_path / "o3"), *RANDOM]) == 0
    assert "sam2prune: model sam2.1_hiera_t, image size 128" in capsys.readouterr().err


def test_progress_off_a_terminal_is_plain_lines(capsys):
    from sam2prune.progress import progress

    assert not sys.stderr.isatty()
    assert list(progress(range(3), desc="work", unit="step")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines()[0].startswith("work: 0/3 steps") and err.splitlines()[-1].startswith("work: 3/3 steps")


def test_overlay_frame_rate_option(tmp_path):
    import av

    overlay = tmp_path / "o.mp4"
    assert (
        main(
            [
                "segment",
                str(CHAIR_FRAMES),
                "--point",
                "300,250",
                "--out",
                str(tmp_path / "o"),
                "--overlay",
                str(overlay),
                "--fps",
                "4",
                *RANDOM,
            ]
        )
        == 0
    )
    with av.open(str(overlay)) as container:
        assert container.streams.video[0].average_rate == 4


def test_j_and_f_are_fractions_everywhere(tmp_path, capsys):
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    out = tmp_path / "run"
    assert (
        main(["eval", "--dataset", "davis", "--root", str(root), "--out", str(out), "--max-rounds", "0", *RANDOM]) == 0
    )
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    csv_value = (out / "global_results-val.csv").read_text().splitlines()[1].split(",")[0]
    assert printed.startswith(f"J&F {csv_value}  ")
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| davis |"))
    assert row.split("|")[5].strip() == csv_value


def test_a_phrase_cache_that_cannot_be_a_folder_is_refused_before_the_models_run(tmp_path, capsys):
    """A --cache-dir naming a file failed with a traceback once the captioner had run."""
    from sam2prune.errors import InputError
    from sam2prune.text.auto import AutoTextPipeline

    (tmp_path / "labels.json").write_text("{}")
    with pytest.raises(InputError, match=r"the phrase cache .*labels.json is a file; pass --cache-dir DIR"):
        AutoTextPipeline("any-captioner", cache_dir=tmp_path / "labels.json")
    with pytest.raises(InputError, match=r"the phrase cache .*labels.json/sub cannot be made: "):
        AutoTextPipeline("any-captioner", cache_dir=tmp_path / "labels.json" / "sub")
    not_a_model = tmp_path / "captioner"
    not_a_model.mkdir()  # found wanting only when loaded: the cache is refused before
    prompt = ["prompt", str(CHAIR_FRAMES), "--box", "1,1,50,50", "--captioner", str(not_a_model)]
    assert main([*prompt, "--cache-dir", str(tmp_path / "labels.json")]) == 2
    assert "labels.json is a file; pass --cache-dir DIR" in capsys.readouterr().err


def test_a_checkpoint_cut_short_is_listed_as_incomplete(tmp_path, monkeypatch, capsys):
    """A download cut short after 50 MB was listed as "found (48 MiB)"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    # the start of a zip without the directory at its end, as a download that stopped
    (tmp_path / "checkpoints" / "sam2.1_hiera_tiny.pt").write_bytes(b"PK\x03\x04" + bytes(2 * 2**20))
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("sam2.1_hiera_t "))
    assert row.endswith("found, but incomplete: download it again")
    # a file of torch's older format (no zip) loads: it is not called incomplete
    torch.save(
        {"model": {"w": torch.zeros(2**18)}},
        tmp_path / "checkpoints" / "sam2.1_hiera_tiny.pt",
        _use_new_zipfile_serialization=False,
    )
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("sam2.1_hiera_t "))
    assert row.endswith("found (1 MiB)")


def test_without_the_default_checkpoint_another_models_file_in_checkpoints_is_named(
    tmp_path, monkeypatch, capsys, no_model
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sam2.1_hiera_small.pt").write_bytes(b"")
    assert main(["segment", str(CHAIR_FRAMES), "--point", "1,1", "--out", str(tmp_path / "o"), *TINY]) == 2
    error = last_error(capsys)
    assert "no checkpoint given for sam2.1_hiera_t" in error
    assert error.endswith("; checkpoints/ holds sam2.1_hiera_small.pt: --model sam2.1_hiera_s uses it")


def test_more_threads_than_usable_cores_is_warned_once(tmp_path, monkeypatch, capsys):
    """--threads above the cores was accepted silently, and runs much slower."""
    from sam2prune import memory_bench

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(
        memory_bench,
        "run_lengths",
        lambda **_: [memory_bench.LengthResult(method="sam2", frames=20, peak_rss_mib=800.0, ms_per_frame=90.0)],
    )
    assert main(["bench", "--lengths", "20", "--methods", "sam2", "--threads", str(cores + 1), *TINY]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "--threads" in line]
    assert warnings == [
        f"sam2prune: --threads {cores + 1} is more than the {cores} CPU cores this process may use: "
        "threads that wait for a core slow every step"
    ]
    assert main(["bench", "--lengths", "20", "--methods", "sam2", "--threads", str(cores), *TINY]) == 0
    assert "--threads" not in capsys.readouterr().err
