"""The ``sam2prune`` console script: one subcommand per job, each a plain function."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from sam2prune.config import FILL_MODES, SCORERS, ProtocolConfig, PruningConfig
from sam2prune.errors import InputError, UserError

log = logging.getLogger("sam2prune")

DEFAULT_MODEL = "sam2.1_hiera_t"


def embedded_clip() -> Path:
    """The short real clip shipped with the package (24 frames of SAM 2's ``bedroom`` demo)."""
    return Path(str(resources.files("sam2prune") / "assets" / "bedroom"))


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="sam2.1_hiera_{t,s,b+,l}, sam2_hiera_{t,s,b+,l} or a SAM 2 YAML config (default: %(default)s)",
    )
    group.add_argument(
        "--checkpoint",
        type=Path,
        help="official SAM 2 checkpoint (.pt) for --model; without it the model runs with random weights",
    )
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="use random weights explicitly (masks are meaningless, timings are real)",
    )
    group.add_argument(
        "--image-size",
        type=int,
        help="model input size in pixels, a multiple of 32 (default: the model's, 1024)",
    )
    group.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N (default: %(default)s)",
    )


_PRUNING_DEFAULTS = PruningConfig()


def _add_pruning_options(parser: argparse.ArgumentParser, *, retention_list: bool = False) -> None:
    """Flags mapping one to one onto PruningConfig fields (defaults from the dataclass)."""
    group = parser.add_argument_group("token pruning")
    if retention_list:
        group.add_argument(
            "--retention",
            type=float,
            nargs="+",
            default=[1.0, 0.5, 0.3, 0.1],
            help="retentions to measure, each in (0, 1] (default: %(default)s)",
        )
    else:
        group.add_argument(
            "--retention",
            type=float,
            default=_PRUNING_DEFAULTS.retention,
            help="fraction of tokens kept per frame, in (0, 1] (default: %(default)s)",
        )
    group.add_argument(
        "--scorer",
        choices=SCORERS,
        default=_PRUNING_DEFAULTS.scorer,
        help="token ranking: prior = previous mask (dilated), uniform = regular grid, random (default: %(default)s)",
    )
    group.add_argument(
        "--prune-conditioning-frames",
        action="store_true",
        default=_PRUNING_DEFAULTS.prune_conditioning_frames,
        help="also prune the memory of prompted frames (default: kept dense)",
    )
    group.add_argument(
        "--fill",
        choices=FILL_MODES,
        default=_PRUNING_DEFAULTS.fill,
        help="dropped positions after memory attention: norm = LayerNorm(x + 0.1 pos), raw = encoder features "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--prior-dilation",
        type=int,
        default=_PRUNING_DEFAULTS.prior_dilation,
        help="dilation of the previous mask in tokens, prior scorer (default: %(default)s)",
    )
    group.add_argument("--seed", type=int, default=_PRUNING_DEFAULTS.seed, help="seed of the random scorer (default: %(default)s)")


def _pruning_config(args: argparse.Namespace, retention: float) -> PruningConfig:
    try:
        return PruningConfig(
            retention=retention,
            scorer=args.scorer,
            prune_conditioning_frames=args.prune_conditioning_frames,
            fill=args.fill,
            prior_dilation=args.prior_dilation,
            seed=args.seed,
        )
    except ValueError as error:
        raise InputError(f"--retention/--scorer/--fill/--prior-dilation: {error}") from error


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _build(args: argparse.Namespace, pruning=None):
    """Build the predictor the model options ask for, saying so when weights are random."""
    from sam2prune.models import build_predictor, resolve_config

    resolve_config(args.model)  # unknown model names fail before anything heavy happens
    if args.checkpoint is not None and args.random_weights:
        raise InputError("--checkpoint and --random-weights exclude each other")
    if args.checkpoint is None:
        reason = "--random-weights" if args.random_weights else "no --checkpoint given"
        log.warning(
            "%s: running %s with RANDOM weights (masks are not meaningful; timings are)",
            reason,
            args.model,
        )
    return build_predictor(
        args.model,
        checkpoint=args.checkpoint,
        random_weights=args.checkpoint is None,
        device=_device(args.device),
        image_size=args.image_size,
        pruning=pruning,
    )


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment objects through a video into DAVIS palette PNGs."""
    from sam2prune.data.video import VideoSource
    from sam2prune.fsutil import check_output_dir
    from sam2prune.prompts import check_prompts, load_prompts_file, prompts_from_arguments
    from sam2prune.segment import segment_video
    from sam2prune.viz import check_overlay_path

    check_output_dir(args.out, overwrite=args.overwrite)
    if args.overlay is not None:
        check_overlay_path(args.overlay)
    video = args.video if args.video is not None else embedded_clip()
    source = VideoSource.open(video)

    from_arguments = prompts_from_arguments(
        points=args.point, negatives=args.neg, box=args.box, mask=args.mask, frame=args.frame, obj_id=args.obj_id
    )
    if args.prompts is not None and from_arguments:
        raise InputError("--prompts cannot be combined with --point, --neg, --box or --mask")
    if args.prompts is not None:
        prompts = load_prompts_file(args.prompts)
    elif from_arguments:
        prompts = from_arguments
    elif args.video is None:
        prompts = load_prompts_file(embedded_clip() / "prompts.json")
        log.info("no prompt given: using the embedded clip's default clicks (%s)", embedded_clip() / "prompts.json")
    else:
        raise InputError("no prompt given: pass --point X,Y, --box X0,Y0,X1,Y1, --mask PNG or --prompts FILE.json")
    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)

    pruning = _pruning_config(args, args.retention) if args.method == "pruned" else None
    predictor = _build(args, pruning)
    result = segment_video(predictor, source, prompts, args.out, overwrite=args.overwrite, overlay=args.overlay)
    objects = f"{len(result.obj_ids)} object{'s' if len(result.obj_ids) != 1 else ''}"
    print(
        f"segmented {result.num_frames} frames, {objects} (ids {', '.join(map(str, result.obj_ids))}) "
        f"in {result.seconds:.1f} s ({result.frames_per_second:.2f} frames/s) -> {result.out_dir}"
        + (f", overlay {args.overlay}" if args.overlay else "")
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark pruned against unpruned SAM 2."""
    import torch

    from sam2prune.bench import BenchSettings, markdown_table, plot, run_benchmark, write_json
    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import ObjectPrompt, load_prompts_file, parse_numbers

    configs = [_pruning_config(args, retention) for retention in args.retention]
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    for path in (args.json, args.plot):
        if path is not None and not path.parent.is_dir():
            raise InputError(f"{path}: folder {path.parent} does not exist")
    source = VideoSource.open(args.video if args.video is not None else embedded_clip())
    source = source.head(min(args.frames, len(source)) if args.frames >= 1 else args.frames)
    if args.point is not None:
        x, y = parse_numbers(args.point, 2, argument="--point")
    elif args.video is None:
        first = load_prompts_file(embedded_clip() / "prompts.json")[0]
        x, y = first.points[0]
    else:
        x, y = source.width / 2, source.height / 2
    prompts = [ObjectPrompt(obj_id=1, frame=0, points=((x, y),), labels=(1,), source="--point")]
    from sam2prune.prompts import check_prompts

    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)

    baseline = _build(args)
    weights = baseline.state_dict()

    def build(pruning):
        if pruning is None:
            return baseline
        from sam2prune.models import build_predictor

        predictor = build_predictor(
            args.model, random_weights=True, device=_device(args.device), image_size=args.image_size, pruning=pruning
        )
        predictor.load_state_dict(weights)  # the same weights as the baseline, checkpoint or random
        return predictor

    settings = BenchSettings(
        model=args.model,
        image_size=baseline.image_size,
        frames=len(source),
        threads=args.threads or torch.get_num_threads(),
        device=_device(args.device),
        random_weights=args.checkpoint is None,
        pruning=configs[0],
        retentions=[config.retention for config in configs],
    )
    result = run_benchmark(settings, source, prompts, build=build, progress=log.info)
    print(markdown_table(result))
    print(
        f"\n{result['model']} at {result['image_size']} px, {result['frames']} frames (steady state: frames >= "
        f"{result['steady_from_frame']}), {result['device']}, {result['threads']} threads, scorer "
        f"{configs[0].scorer}, conditioning frames {'pruned' if configs[0].prune_conditioning_frames else 'dense'}"
        + (", RANDOM weights" if result["random_weights"] else "")
    )
    if args.json is not None:
        write_json(args.json, result)
        print(f"results: {args.json}")
    if args.plot is not None:
        plot(args.plot, result)
        print(f"plot: {args.plot}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score a results folder against DAVIS-layout ground truth (official semi-supervised protocol)."""
    from sam2prune.scoring import GLOBAL_COLUMNS, score_results, write_official_csvs

    out_dir = args.out if args.out is not None else args.results
    if not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: folder does not exist")
    if not args.gt_root.is_dir():
        raise InputError(f"--gt-root {args.gt_root}: folder does not exist")
    measures, scores = score_results(args.gt_root, args.results, set_name=args.set)
    write_official_csvs(out_dir, args.set, measures, scores)
    print("| " + " | ".join(GLOBAL_COLUMNS) + " |")
    print("|" + "---|" * len(GLOBAL_COLUMNS))
    print("| " + " | ".join(f"{measures[k]:.3f}" for k in GLOBAL_COLUMNS) + " |")
    print(f"{len(scores)} objects; CSV files and summary.json in {out_dir}")
    return 0


_PROTOCOL_FLAGS = ("refine_below", "clicks_per_round", "max_rounds")


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    from sam2prune.data.datasets import DATASETS

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, required=True, help="dataset layout (see `sam2prune eval --help`)")
    data.add_argument("--root", type=Path, required=True, metavar="ROOT", help="the dataset's root folder")
    data.add_argument("--split", help="set/split (default: the dataset's validation set: val, or valid for LVOS)")
    data.add_argument("--sequences", nargs="+", metavar="NAME", help="only these sequences")
    data.add_argument("--limit", type=int, metavar="N", help="only the first N sequences")
    protocol = parser.add_argument_group("interactive protocol")
    defaults = ProtocolConfig()
    protocol.add_argument("--refine-below", type=float, default=defaults.refine_below, help="refine frames whose J&F is below this (default: %(default)s)")
    protocol.add_argument("--clicks-per-round", type=int, default=defaults.clicks_per_round, help="corrective clicks per round (default: %(default)s)")
    protocol.add_argument("--max-rounds", type=int, default=defaults.max_rounds, help="refinement rounds per sequence at most (default: %(default)s)")


def _select_sequences(args: argparse.Namespace):
    from sam2prune.data.datasets import read_dataset

    sequences = list(read_dataset(args.dataset, args.root, args.split))
    if args.sequences:
        known = {s.name for s in sequences}
        unknown = [name for name in args.sequences if name not in known]
        if unknown:
            raise InputError(f"--sequences: {', '.join(unknown)} not in the {args.dataset} set ({len(known)} sequences)")
        sequences = [s for s in sequences if s.name in args.sequences]
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit must be >= 1, got {args.limit}")
        sequences = sequences[: args.limit]
    if not sequences:
        raise InputError(f"no sequence to evaluate in {args.root}")
    return sequences


def _protocol(args: argparse.Namespace) -> ProtocolConfig:
    if not 0 <= args.refine_below <= 1 or args.clicks_per_round < 1 or args.max_rounds < 0:
        raise InputError("--refine-below must be in [0, 1], --clicks-per-round >= 1, --max-rounds >= 0")
    return ProtocolConfig(refine_below=args.refine_below, clicks_per_round=args.clicks_per_round, max_rounds=args.max_rounds)


def _run_eval(args: argparse.Namespace, predictor, pruning, sequences, out_dir: Path) -> dict:
    from dataclasses import asdict

    import torch

    from sam2prune.data.datasets import DEFAULT_SPLITS
    from sam2prune.evaluate import EvalSettings, evaluate_sequences, prepare_run_dir, summarize

    protocol = _protocol(args)
    settings = EvalSettings(
        dataset=args.dataset,
        root=str(args.root.resolve()),
        split=args.split or DEFAULT_SPLITS[args.dataset],
        method="sam2" if pruning is None else "pruned",
        model=args.model,
        checkpoint=str(args.checkpoint) if args.checkpoint else None,
        image_size=predictor.image_size,
        device=str(predictor.device),
        pruning=asdict(pruning) if pruning is not None else None,
        protocol=asdict(protocol),
    )
    prepare_run_dir(out_dir, settings, overwrite=args.overwrite)
    done = [s.name for s in sequences if (out_dir / "sequences" / f"{s.name}.json").is_file()]
    if done:
        log.info("resuming %s: %d of %d sequences already done", out_dir, len(done), len(sequences))
    records = evaluate_sequences(predictor, sequences, out_dir, protocol=protocol, device=torch.device(predictor.device))
    return summarize(records, settings, out_dir)


def _print_overall(report: dict, out_dir: Path) -> None:
    overall = report["overall"]
    print(
        f"J&F {overall['J&F-Mean'] * 100:.1f}  J {overall['J-Mean'] * 100:.1f}  F {overall['F-Mean'] * 100:.1f}  "
        f"{overall['fps']:.2f} frames/s  peak memory {overall['peak_memory_mib']:.0f} MiB  "
        f"kept {overall['kept_fraction']:.2f}  refinement rounds {overall['refinement_rounds']}, clicks {overall['clicks']}  "
        f"({overall['sequences']} sequences, {overall['objects']} objects) -> {out_dir}"
    )


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the interactive protocol on a dataset and score it."""
    sequences = _select_sequences(args)
    pruning = _pruning_config(args, args.retention) if args.method == "pruned" else None
    _protocol(args)
    predictor = _build(args, pruning)
    report = _run_eval(args, predictor, pruning, sequences, args.out)
    _print_overall(report, args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Table-1-style markdown across runs."""
    from sam2prune.report import load_reports, markdown_report, plot_tradeoff, write_text

    reports = load_reports(args.runs)
    text = markdown_report(reports)
    if args.out is not None:
        write_text(args.out, text)
    print(text, end="")
    if args.plot is not None:
        plot_tradeoff(args.plot, reports)
        print(f"plot: {args.plot}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Evaluate a grid of pruning settings (plus unpruned SAM 2) and tabulate them."""
    from sam2prune.models import build_predictor
    from sam2prune.report import load_reports, markdown_report, plot_tradeoff, write_text

    sequences = _select_sequences(args)
    _protocol(args)
    grid = [(None, "sam2")] if not args.no_baseline else []
    for scorer in args.scorers:
        for retention in args.retention:
            args.scorer = scorer
            grid.append((_pruning_config(args, retention), f"pruned_r{retention:g}_{scorer}"))
    if not args.out.parent.is_dir():
        raise InputError(f"--out {args.out}: parent folder {args.out.parent} does not exist")
    args.out.mkdir(exist_ok=True)
    baseline = _build(args)
    weights = baseline.state_dict()
    run_dirs = []
    for pruning, label in grid:
        log.info("sweep: %s", label)
        if pruning is None:
            predictor = baseline
        else:
            predictor = build_predictor(
                args.model, random_weights=True, device=_device(args.device), image_size=args.image_size, pruning=pruning
            )
            predictor.load_state_dict(weights)  # the same weights as the baseline
        _run_eval(args, predictor, pruning, sequences, args.out / label)
        run_dirs.append(args.out / label)
    reports = load_reports(run_dirs)
    write_text(args.out / "report.md", markdown_report(reports))
    print(markdown_report(reports), end="")
    if args.plot:
        plot_tradeoff(args.out / "tradeoff.png", reports)
    print(f"report: {args.out / 'report.md'}")
    return 0


def _frame_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame index (integer >= 0), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a frame index (integer >= 0), got {value}")
    return value


def _object_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an object id in 1..254, got {text!r}") from None
    if not 1 <= value <= 254:
        raise argparse.ArgumentTypeError(f"expected an object id in 1..254, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam2prune",
        description="Token-pruned SAM 2 video object segmentation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment = commands.add_parser(
        "segment",
        help="segment objects through a video into palette PNGs",
        description=(
            "Segment prompted objects through a video. Writes one indexed-palette PNG per frame into "
            "--out (DAVIS convention: 0 background, k = object id k; same size and name stem as the frame). "
            "Without VIDEO it runs on the embedded 24-frame bedroom clip with its default clicks."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "prompts file (--prompts) format:\n"
            '  {"objects": [{"obj_id": 1, "frame": 0, "points": [[x, y]], "labels": [1]},\n'
            '               {"obj_id": 2, "frame": 5, "box": [x0, y0, x1, y1]},\n'
            '               {"obj_id": 3, "frame": 8, "mask": "mask.png"}]}\n'
            "coordinates are pixels of the original frames; mask paths are relative to the JSON file."
        ),
    )
    segment.add_argument(
        "video",
        nargs="?",
        type=Path,
        metavar="VIDEO",
        help="folder of JPEG/PNG frames (natural sort of names) or a video file (mp4, mov, avi, mkv, webm)",
    )
    segment.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder for the PNGs")
    segment.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    prompts = segment.add_argument_group("prompts (pixel coordinates of the original frames)")
    prompts.add_argument("--point", action="append", default=[], metavar="X,Y", help="positive click (repeatable)")
    prompts.add_argument("--neg", action="append", default=[], metavar="X,Y", help="negative click (repeatable)")
    prompts.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box around the object")
    prompts.add_argument(
        "--mask",
        type=Path,
        metavar="PNG",
        help="object mask (non-zero pixels); a label PNG with several ids adds one object per id",
    )
    prompts.add_argument("--frame", type=_frame_index, default=0, metavar="N", help="frame of the prompts (default: 0)")
    prompts.add_argument("--obj-id", type=_object_id, metavar="K", help="object id of the prompts (default: 1)")
    prompts.add_argument("--prompts", type=Path, metavar="FILE.json", help="several objects on several frames (see below)")
    segment.add_argument("--overlay", type=Path, metavar="FILE", help="also write the masks over the frames as .mp4 or .gif")
    _add_model_options(segment)
    segment.add_argument(
        "--method",
        choices=("pruned", "sam2"),
        default="pruned",
        help="pruned = token-pruned predictor; sam2 = the unpruned official predictor (default: %(default)s)",
    )
    _add_pruning_options(segment)
    segment.set_defaults(handler=cmd_segment)

    bench = commands.add_parser(
        "bench",
        help="measure speed and memory, pruned vs unpruned",
        description=(
            "In one process, on the same frames, with the same weights and one click on frame 0: track with "
            "unpruned SAM 2 and with the pruned predictor at each --retention. Reports the median ms per "
            f"steady-state frame (frames >= 8, once the memory bank is full), per-component medians, memory-bank "
            "bytes per tracked frame, peak RSS (and peak CUDA memory on a GPU) and the speedup. Without VIDEO it "
            "uses the embedded clip. Without --checkpoint, weights are random: timings are real, masks are not."
        ),
    )
    bench.add_argument("video", nargs="?", type=Path, metavar="VIDEO", help="folder of frames or a video file")
    bench.add_argument("--frames", type=int, default=16, help="number of frames to track (default: %(default)s)")
    bench.add_argument(
        "--point",
        metavar="X,Y",
        help="the click on frame 0 (default: the embedded clip's first default click, or the frame centre)",
    )
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, i.e. the cores)")
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    bench.add_argument("--plot", type=Path, metavar="FILE.png", help="plot ms/frame and bank size vs retention")
    _add_model_options(bench)
    _add_pruning_options(bench, retention_list=True)
    bench.set_defaults(handler=cmd_bench)

    score = commands.add_parser(
        "score",
        help="J&F of a results folder against DAVIS-layout ground truth",
        description=(
            "Semi-supervised DAVIS 2017 scoring, reproducing the official evaluation: J (IoU) and F (boundary "
            "F-measure) per object and frame, first and last frames excluded, objects missing from the results "
            "count as empty. Writes global_results-<set>.csv and per-sequence_results-<set>.csv (as the official "
            "tool) and summary.json (full precision). Works for any method's palette-PNG results."
        ),
    )
    score.add_argument("--gt-root", type=Path, required=True, metavar="ROOT", help="DAVIS layout: ROOT/Annotations/480p/<seq>/*.png")
    score.add_argument("--results", type=Path, required=True, metavar="DIR", help="results: DIR/<seq>/<frame>.png")
    score.add_argument("--set", default="val", help="ROOT/ImageSets/2017/<set>.txt lists the sequences (default: %(default)s)")
    score.add_argument("--out", type=Path, metavar="DIR", help="where the CSV files go (default: the results folder)")
    score.set_defaults(handler=cmd_score)

    from sam2prune.data import datasets as datasets_module

    evaluate = commands.add_parser(
        "eval",
        help="run the interactive protocol on a dataset and score it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Protocol: one positive click per object on the first frame it appears on, at the maximum of the "
            "distance transform of its mask; tracking; then, while some frame's J&F for an object is below "
            "--refine-below, up to --clicks-per-round corrective clicks on the worst frame (positive in the largest "
            "false-negative region, negative in the largest false-positive region, at their distance-transform "
            "maxima) and tracking again from it, at most --max-rounds rounds per sequence. Writes masks/<seq>/*.png, "
            "sequences/<seq>.json, the official CSVs and report.json into --out. An interrupted run resumes where it "
            "stopped (same --out, same settings). DAVIS is scored exactly as the official tool; other datasets per "
            "object over the annotated frames after its prompt frame.\n\nDataset layouts:\n"
            + datasets_module.__doc__.split("ROOT is what ``--root`` points to):", 1)[1].replace("``", "")
        ),
    )
    _add_eval_options(evaluate)
    evaluate.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder (resumed if it holds this run)")
    evaluate.add_argument("--overwrite", action="store_true", help="start over in --out")
    evaluate.add_argument("--method", choices=("pruned", "sam2"), default="pruned", help="default: %(default)s")
    _add_model_options(evaluate)
    _add_pruning_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    report = commands.add_parser("report", help="Table-1-style markdown across evaluation runs")
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="folders written by `sam2prune eval`")
    report.add_argument("--out", type=Path, metavar="FILE.md", help="also write the table here")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="J&F and FPS against retention")
    report.set_defaults(handler=cmd_report)

    sweep = commands.add_parser(
        "sweep",
        help="evaluate a grid of retentions and scorers (plus unpruned SAM 2) into one table",
        description="Runs `eval` for unpruned SAM 2 and every --scorers x --retention combination, with the same "
        "weights, into --out/<label>/ (each resumable), then writes --out/report.md.",
    )
    _add_eval_options(sweep)
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR")
    sweep.add_argument("--overwrite", action="store_true", help="start every run over")
    sweep.add_argument("--scorers", nargs="+", choices=SCORERS, default=[_PRUNING_DEFAULTS.scorer], help="default: %(default)s")
    sweep.add_argument("--no-baseline", action="store_true", help="skip unpruned SAM 2")
    sweep.add_argument("--plot", action="store_true", help="also write --out/tradeoff.png")
    _add_model_options(sweep)
    _add_pruning_options(sweep, retention_list=True)
    sweep.set_defaults(handler=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="sam2prune: %(message)s", level=logging.DEBUG if args.verbose else logging.INFO, force=True
    )
    try:
        return args.handler(args)
    except UserError as error:
        print(f"sam2prune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sam2prune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
