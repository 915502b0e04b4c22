"""``sam2prune sweep``: ``eval`` over a grid of pruning settings (plus unpruned SAM 2), tabulated."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sam2prune.cli.common import (
    PRUNING_DEFAULTS,
    RETENTION_GRID,
    Command,
    DataSelection,
    GpuOptions,
    MemoryOptions,
    ModelOptions,
    add_data_options,
    add_gpu_options,
    add_memory_options,
    add_model_options,
    add_protocol_options,
    add_pruning_options,
    add_ray_options,
    build,
    build_pruning_configs,
    check_gpu_options,
    check_run_folder,
    data_selection,
    default_text,
    gpu_options,
    log,
    memory_options,
    model_options,
    path_argument,
    protocol_config,
    ray_config,
    refuse_ineffective_options,
    resolve_device,
    resolve_weights,
    select_sequences,
    signal_list,
)
from sam2prune.cli.eval import check_ray_runs, check_run_before_building, run_eval, run_evals_on_ray
from sam2prune.config import SCORERS, ProtocolConfig, PruningConfig, RayConfig
from sam2prune.errors import InputError

# (config, or None for unpruned SAM 2; run label; label of the run without its text, for
# runs that differ only in the phrasing of the target)
GridEntry = tuple[PruningConfig | None, str, str | None]


def _sweep_grid(args: argparse.Namespace) -> list[GridEntry]:
    """Every run a sweep asks for, in order."""
    for single, plural in (("scorer", "scorers"), ("signals", "signal-sets"), ("text", "texts")):
        if getattr(args, single) is not None and getattr(args, plural.replace("-", "_")) is not None:
            raise InputError(f"--{single} and --{plural} exclude each other: a sweep varies --{plural}")
    scorers = args.scorers or [args.scorer or PRUNING_DEFAULTS.scorer]
    if "router" not in scorers:
        unused = [flag for flag, value in (("--signal-sets", args.signal_sets), ("--texts", args.texts)) if value]
        if unused:
            raise InputError(
                f"{', '.join(unused)} {'varies' if len(unused) == 1 else 'vary'} the router's inputs: no effect "
                f"without router among the scorers ({', '.join(scorers)})"
            )
    signal_sets = args.signal_sets or [None]
    texts = list(dict.fromkeys(args.texts)) if args.texts else [None]  # a phrasing given twice runs once
    if args.texts and len(texts) < len(args.texts):
        repeated = [text for text in texts if args.texts.count(text) > 1]
        log.warning("--texts given more than once (each runs once): %s", ", ".join(map(repr, repeated)))
    retentions = args.retention or list(RETENTION_GRID)
    uncertainty = args.uncertainty or PRUNING_DEFAULTS.uncertainty
    grid: list[GridEntry] = [] if args.no_baseline else [(None, "sam2", None)]
    configs: list[PruningConfig] = []
    for scorer in scorers:
        router = scorer == "router"
        for signals in signal_sets if router else [None]:
            # a signal set without the text signal reads no phrasing: it runs once, without one
            reads_text = router and (signals is None or "text" in signals)
            for number, text in enumerate(texts if reads_text else [None]):
                variant: dict[str, object] = {"scorer": scorer}
                if signals is not None:
                    variant["signals"] = signals
                if text is not None:
                    variant["text"] = text
                passes = args.mc_passes if router and uncertainty == "mc" and args.mc_passes else [None]
                for config in build_pruning_configs(args, retentions=retentions, mc_passes=passes, variant=variant):
                    label = f"pruned_r{config.retention:g}_{scorer}"
                    if signals is not None:
                        label += "_" + "+".join(signals)
                    if router and uncertainty == "mc":
                        label += f"_T{config.mc_passes}"
                    base_label = label
                    if len(texts) > 1 and text is not None:
                        label += f"_text{number + 1}"
                    grid.append((config, label, base_label if len(texts) > 1 and text is not None else None))
                    configs.append(config)
    varied = {"scorer"} | ({"signals"} if args.signal_sets else set()) | ({"text"} if args.texts else set())
    if configs:
        refuse_ineffective_options(args, configs, varied=varied)
    return _each_run_once(grid)


def _each_run_once(grid: list[GridEntry]) -> list[GridEntry]:
    """The grid with a setting given twice (``--retention 0.5 0.5``, often a typo) run once, said.

    Raises:
        InputError: two different settings would share a run folder (a label shows a retention
            to 6 significant digits), naming what differs.
    """
    kept: dict[str, GridEntry] = {}
    repeated: list[str] = []
    for entry in grid:
        pruning, label, _ = entry
        if label not in kept:
            kept[label] = entry
        elif kept[label][0] == pruning:
            repeated.append(label)
        else:
            first = kept[label][0]
            assert first is not None and pruning is not None  # "sam2" is the baseline's alone
            differences = [
                f"{name} {getattr(first, name)!r} and {getattr(pruning, name)!r}"
                for name in PruningConfig.__dataclass_fields__
                if getattr(first, name) != getattr(pruning, name)
            ]
            raise InputError(
                f"two settings of the sweep ({'; '.join(differences)}) would share the run folder {label}: give "
                "values that differ in their first 6 significant digits"
            )
    if repeated:
        log.warning("settings given more than once (each runs once): %s", ", ".join(dict.fromkeys(repeated)))
    return list(kept.values())


def sweep(
    *,
    grid: Sequence[GridEntry],
    data: DataSelection,
    out: Path,
    protocol: ProtocolConfig = ProtocolConfig(),
    model: ModelOptions = ModelOptions(),
    cluster: RayConfig = RayConfig(),
    overwrite: bool = False,
    plot: bool = False,
    memory: MemoryOptions = MemoryOptions(),
    gpu: GpuOptions = GpuOptions(),
) -> str:
    """Evaluate every run of ``grid`` with the same weights into ``out/<label>/`` (each
    resumable), then write, print and return ``out/report.md``; with ``plot`` also
    ``out/tradeoff.png``. Runs that share a label without text are compared by the overlap of
    their kept tokens. With ``cluster`` enabled, every run's sequences are tasks on Ray workers,
    all runs at once.

    Raises:
        SequencesFailed: on Ray, some sequences failed on every attempt (the others are saved,
            the complete runs reported; no report.md).
    """
    from sam2prune.evaluation.protocol import check_sequences, record_path
    from sam2prune.evaluation.report import load_reports, markdown_report, pyplot
    from sam2prune.fsutil import make_output_dir, read_json
    from sam2prune.models import with_pruning

    check_run_folder(out, root=data.root)
    if not grid:
        raise InputError("nothing to sweep: --no-baseline and no pruned setting")
    check_sweep_files(out)
    if plot:
        pyplot()  # matplotlib is there (the table is written after every run)
    if cluster.enabled:  # the GPU options are checked once the cluster says which device its workers have
        check_ray_runs(prunings=[pruning for pruning, _, _ in grid])
        # workers may run elsewhere: absolute paths (the same on every node of a shared filesystem)
        data = replace(data, root=data.root.resolve())
    else:
        check_gpu_options(gpu, resolve_device(model.device), pruned=any(pruning is not None for pruning, _, _ in grid))
    weights = resolve_weights(model, required=True)
    sequences = select_sequences(data)
    check_sequences(sequences)  # every sequence's annotations, before the model is built
    make_output_dir(out)
    pending = overwrite or any(
        not record_path(out / label, sequence.name).is_file() for _, label, _ in grid for sequence in sequences
    )
    # the last completion's table describes other runs until this one completes (and none is
    # written if a sequence fails): removed once every run folder is checked
    stale = [out / name for name in SWEEP_FILES] if pending else []
    if cluster.enabled:
        run_evals_on_ray(
            runs=[(pruning, out / label, label) for pruning, label, _ in grid],
            protocol=protocol,
            data=data,
            sequences=sequences,
            model=model,
            weights=weights,
            cluster=cluster,
            overwrite=overwrite,
            memory=memory,
            gpu=gpu,
            stale=stale,
        )
    else:
        # every setting's run folder checked before the model is built and the first run starts
        # (a mistake in the last one would only be found after the others had run, for hours)
        for pruning, label, _ in grid:
            # a folder holding no run is refused with --overwrite too
            check_run_before_building(
                out / label,
                pruning=pruning,
                protocol=protocol,
                data=data,
                model=model,
                weights=weights,
                memory=memory,
                gpu=gpu,
                overwrite=overwrite,
            )
        for path in stale:
            path.unlink(missing_ok=True)
        baseline = build(model, weights)
        # one pruned model, switched to each setting (as Ray workers do), its files read now
        pruned = None
        for pruning, _, _ in grid:
            if pruning is not None:
                pruned = pruned if pruned is not None else with_pruning(baseline, pruning)
                pruned.set_pruning(pruning)
        for pruning, label, _ in grid:
            log.info("sweep: %s", label)
            predictor = baseline
            if pruning is not None:
                assert pruned is not None  # made above for every pruned setting
                pruned.set_pruning(pruning)
                predictor = pruned
            run_eval(
                predictor=predictor,
                pruning=pruning,
                protocol=protocol,
                data=data,
                sequences=sequences,
                model=model,
                weights=weights,
                out=out / label,
                overwrite=overwrite,
                memory=memory,
                gpu=gpu,
            )
    run_dirs = [out / label for _, label, _ in grid]
    phrasings: dict[str, list[tuple[str, str]]] = {}  # run label without text -> [(text, label)]
    for pruning, label, base_label in grid:
        if base_label is not None and pruning is not None and pruning.text is not None:
            phrasings.setdefault(base_label, []).append((pruning.text, label))
    reports = load_reports(run_dirs)
    table = markdown_report(reports)
    if phrasings:
        from sam2prune.evaluation.protocol import kept_token_overlap

        table += "\nRobustness to the phrasing of the target (kept-token IoU against the first phrasing):\n\n"
        table += "| run | phrasing | J&F | kept-token IoU vs first |\n|---|---|---|---|\n"
        for base_label, runs in phrasings.items():
            first_dir = out / runs[0][1]
            for text, label in runs:
                overall = read_json(out / label / "report.json", what="run report")["overall"]
                overlap = kept_token_overlap(first_dir, out / label)
                cell = "-" if overlap is None else f"{overlap:.3f}"
                table += f"| {base_label} | {text} | {overall['J&F-Mean']:.3f} | {cell} |\n"
    models = (
        "the unpruned and the pruned model"
        if any(pruning is None for pruning, _, _ in grid) and any(pruning is not None for pruning, _, _ in grid)
        else "one model"
    )
    where = (
        f"each Ray worker process, which holds {models}"
        if cluster.enabled
        else f"the one process that ran every setting ({models} loaded, and what earlier runs left allocated)"
    )
    table += f"{SWEEP_TABLE_END}{where}: compare memory with separate `sam2prune eval` runs.\n"
    print(table, end="")
    write_sweep_files(out, table, reports if plot else None)
    others = sorted(
        folder.name
        for folder in out.iterdir()
        if folder.is_dir() and (folder / "run.json").is_file() and folder not in run_dirs
    )
    if others:
        log.info(
            "%s holds runs of other settings, not in this table: %s (`sam2prune report` tabulates any runs)",
            out,
            ", ".join(others),
        )
    print(f"report: {out / 'report.md'}")
    return table


SWEEP_FILES = ("report.md", "tradeoff.png")
# what a sweep wrote into --out: each of SWEEP_FILES by its SHA-256 (null while being written)
SWEEP_MARKER = ".sam2prune-sweep.json"
# the last line of a sweep's table (sweeps made before SWEEP_MARKER are known by it)
SWEEP_TABLE_END = "\nPeak memory here is that of "


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_sweep_files(out: Path) -> None:
    """Raises InputError when ``out`` is an eval run, or holds a file a sweep writes
    (``SWEEP_FILES``) that no sweep wrote there, or that was changed since: only an earlier
    sweep's own table and plot are replaced."""
    if (out / "run.json").is_file():
        raise InputError(
            f"--out {out} is a run of `sam2prune eval` (run.json): a sweep writes its runs into subfolders of a "
            "folder of its own; name another folder"
        )
    marker = out / SWEEP_MARKER
    written = _read_marker(marker) if marker.exists() else _legacy_sweep_files(out)
    for name in SWEEP_FILES:
        path = out / name
        if path.exists() and not (name in written and (written[name] is None or written[name] == _sha256(path))):
            raise InputError(
                f"--out {out} holds {name}, not written by a sweep (or changed since): a sweep writes its own "
                "there; move it or name another folder"
            )


def _read_marker(marker: Path) -> dict[str, str | None]:
    """The files ``SWEEP_MARKER`` lists, by name: their hashes.

    Raises:
        InputError: it is not a sweep's marker.
    """
    try:
        written = json.loads(marker.read_text())["written"]
    except (OSError, ValueError, KeyError, TypeError):
        written = None
    if not isinstance(written, dict) or not all(
        name in SWEEP_FILES and (value is None or isinstance(value, str)) for name, value in written.items()
    ):
        raise InputError(f"{marker} is not the record a sweep writes of its files; move it or name another --out")
    return written


def _legacy_sweep_files(out: Path) -> dict[str, str | None]:
    """The files of a sweep made before ``SWEEP_MARKER`` existed: its table (known by its last
    line), and the plot beside it, where the folder holds runs."""
    table = out / "report.md"
    runs = out.is_dir() and any((folder / "run.json").is_file() for folder in out.iterdir() if folder.is_dir())
    try:
        ours = runs and table.is_file() and SWEEP_TABLE_END in table.read_text(errors="replace")
    except OSError:
        ours = False
    return dict.fromkeys(SWEEP_FILES) if ours else {}


def write_sweep_files(out: Path, table: str, reports: list[dict] | None) -> None:
    """``out``/report.md holding ``table``, and tradeoff.png of ``reports`` (None: no plot, an
    earlier sweep's removed), recorded in ``SWEEP_MARKER`` as the sweep's own."""
    from sam2prune.evaluation.report import plot_tradeoff
    from sam2prune.fsutil import atomic_write_json, atomic_write_text

    # recorded before they are written: a sweep stopped in between left them a sweep's
    atomic_write_json(out / SWEEP_MARKER, {"written": dict.fromkeys(SWEEP_FILES)})
    atomic_write_text(out / "report.md", table)
    if reports is None:
        (out / "tradeoff.png").unlink(missing_ok=True)
    else:
        plot_tradeoff(out / "tradeoff.png", reports)
    written = {name: _sha256(out / name) for name in SWEEP_FILES if (out / name).is_file()}
    atomic_write_json(out / SWEEP_MARKER, {"written": written})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser)
    add_protocol_options(parser)
    parser.add_argument(
        "--out",
        type=path_argument,
        required=True,
        metavar="DIR",
        help="folder of the runs, one subfolder each, and report.md",
    )
    parser.add_argument("--overwrite", action="store_true", help="start every run over")
    parser.add_argument(
        "--scorers",
        nargs="+",
        choices=SCORERS,
        metavar="SCORER",
        help=f"scorers to compare: {', '.join(SCORERS)} (default: {default_text(PRUNING_DEFAULTS, 'scorer')})",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip unpruned SAM 2")
    parser.add_argument("--plot", action="store_true", help="also write --out/tradeoff.png")
    parser.add_argument(
        "--signal-sets",
        type=signal_list,
        nargs="+",
        metavar="LIST",
        help="router signal subsets to compare, e.g. text text,uncertainty",
    )
    parser.add_argument(
        "--texts",
        nargs="+",
        metavar="TEXT",
        help="several phrasings of the target (e.g. accurate, vague, human); one run each, compared",
    )
    add_model_options(parser)
    add_pruning_options(parser, retention_list=True, multi_mc=True)
    add_memory_options(parser)
    add_gpu_options(parser, subject="every run's tracking")
    add_ray_options(parser)


def handle(args: argparse.Namespace) -> int:
    sweep(
        grid=_sweep_grid(args),
        data=data_selection(args),
        out=args.out,
        protocol=protocol_config(args),
        model=model_options(args),
        cluster=ray_config(args),
        overwrite=args.overwrite,
        plot=args.plot,
        memory=memory_options(args),
        gpu=gpu_options(args),
    )
    return 0


COMMAND = Command(
    run=sweep,
    add_arguments=add_arguments,
    handle=handle,
    help="evaluate a grid of retentions and scorers (plus unpruned SAM 2) into one table",
    description=(
        "Runs `eval` for unpruned SAM 2 and every --scorers x --signal-sets x --texts x --mc-passes x "
        "--retention combination, with the same weights, into --out/<label>/ (each resumable), then writes "
        "--out/report.md. With --workers N or --ray-address, every (setting, sequence) is a task on Ray workers "
        "(see `sam2prune eval --help`)."
    ),
    examples=(
        "sam2prune sweep --dataset davis --root DAVIS --checkpoint sam2.1_hiera_tiny.pt --retention 1.0 0.5 0.3 0.1 --out runs/sweep --plot",
    ),
)
