"""The ``sam2prune`` console script: one subcommand per job, each a plain function."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from sam2prune.config import FILL_MODES, ROUTERS, SCORERS, SIGNALS, UNCERTAINTY_MODES, ProtocolConfig, PruningConfig
from sam2prune.errors import InputError, UserError

log = logging.getLogger("sam2prune")

DEFAULT_MODEL = "sam2.1_hiera_t"
RANDOM_WEIGHTS_SEED = 0


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


def _signal_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SIGNALS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(SIGNALS)}, got {text!r}")
    return names


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_pruning_options(parser: argparse.ArgumentParser, *, retention_list: bool = False, multi_mc: bool = False) -> None:
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
        help="token ranking: router = fusion of --signals; prior = previous mask (dilated) alone; uniform = "
        "regular grid; random (default: %(default)s)",
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
    group.add_argument("--seed", type=int, default=_PRUNING_DEFAULTS.seed, help="seed of the random scorer and dropout masks (default: %(default)s)")
    router = parser.add_argument_group("router (with --scorer router)")
    router.add_argument(
        "--router",
        choices=ROUTERS,
        default=_PRUNING_DEFAULTS.router,
        help="default = weighted sum of the normalised signals (no training); paper = the source paper's MLP; "
        "learned = MLP over all signals; paper/learned load --router-weights (default: %(default)s)",
    )
    router.add_argument("--router-weights", metavar="FILE", help="weights of the paper/learned router (sam2prune train-router)")
    router.add_argument(
        "--signals",
        type=_signal_list,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(SIGNALS)} (default: all available; text with --text)",
    )
    router.add_argument("--text", help="description of the target, for the text signal (needs --aligner)")
    router.add_argument("--aligner", metavar="FILE", help="token-to-text projection (sam2prune fit-aligner)")
    if multi_mc:
        router.add_argument("--mc-passes", type=int, nargs="+", default=[_PRUNING_DEFAULTS.mc_passes], help="dropout samples T for --uncertainty mc; several values are each measured (default: %(default)s)")
    else:
        router.add_argument("--mc-passes", type=int, default=_PRUNING_DEFAULTS.mc_passes, help="dropout samples T for --uncertainty mc (default: %(default)s)")
    router.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_MODES,
        default=_PRUNING_DEFAULTS.uncertainty,
        help="analytic = closed-form dropout variance in one pass; mc = sampled (default: %(default)s)",
    )
    router.add_argument("--mc-dropout-p", type=float, default=_PRUNING_DEFAULTS.mc_dropout_p, help="dropout rate (default: %(default)s)")
    router.add_argument(
        "--uncertainty-blocks",
        type=_int_list,
        default=_PRUNING_DEFAULTS.uncertainty_blocks,
        metavar="LIST",
        help="Hiera blocks with dropout, comma-separated (default: 3,4,5)",
    )
    router.add_argument(
        "--signal-weights",
        type=_float_list,
        default=_PRUNING_DEFAULTS.signal_weights,
        metavar="P,T,U,V",
        help="weights of prior, text, uncertainty, visual in the default router (default: 1,0.5,0.25,0.1)",
    )


def _pruning_config(args: argparse.Namespace, retention: float, mc_passes: int | None = None) -> PruningConfig:
    if args.text is not None and args.scorer != "router":
        raise InputError(f"--text is used by the router; it has no effect with --scorer {args.scorer}")
    try:
        return PruningConfig(
            retention=retention,
            scorer=args.scorer,
            prune_conditioning_frames=args.prune_conditioning_frames,
            fill=args.fill,
            prior_dilation=args.prior_dilation,
            seed=args.seed,
            router=args.router,
            signals=args.signals,
            text=args.text,
            auto_text=getattr(args, "auto_text", False),
            aligner=args.aligner,
            uncertainty=args.uncertainty,
            mc_passes=mc_passes if mc_passes is not None else args.mc_passes,
            mc_dropout_p=args.mc_dropout_p,
            uncertainty_blocks=tuple(args.uncertainty_blocks),
            signal_weights=tuple(args.signal_weights),
            router_weights=args.router_weights,
        )
    except ValueError as error:
        raise InputError(f"pruning options: {error}") from error


def _add_auto_text_options(parser: argparse.ArgumentParser, *, switch: bool = True) -> None:
    group = parser.add_argument_group("automatic text prompt (region -> caption -> phrase)")
    if switch:
        group.add_argument(
            "--auto-text",
            action="store_true",
            help="describe each prompted object with --captioner and use the phrase for the text signal (needs --aligner)",
        )
    group.add_argument("--captioner", metavar="MODEL", help="image-to-text model: a transformers folder or hub id (BLIP, BLIP-2, LLaVA, Florence-2, ...)")
    group.add_argument("--refiner", metavar="MODEL", help="caption -> phrase: parse (default: the subject noun phrase, from spaCy's dependency parse; needs the text extra), span (the caption span closest to the caption in MiniLM embedding) or a seq2seq/causal LM folder or hub id")
    group.add_argument("--max-words", type=int, default=6, help="words in the phrase at most (default: %(default)s)")
    group.add_argument("--caption-prompt", default=None, help="what the captioner is asked (default: an object-centric description request)")
    group.add_argument("--cache-dir", type=Path, help="cache of generated phrases (default: ~/.cache/sam2prune/auto_text)")


def _auto_text_pipeline(args: argparse.Namespace):
    from sam2prune.text.auto import DEFAULT_CAPTION_PROMPT, AutoTextPipeline

    if not args.captioner:
        raise InputError("--auto-text needs --captioner MODEL (an image-to-text model folder or hub id)")
    return AutoTextPipeline(
        args.captioner,
        refiner=args.refiner,
        max_words=args.max_words,
        caption_prompt=args.caption_prompt or DEFAULT_CAPTION_PROMPT,
        device=_device(args.device),
        cache_dir=args.cache_dir,
    )


def _auto_text_hook(pipeline, source, prompts):
    """``on_prompted`` callback that describes each object and sets its text on the session."""
    from sam2prune.text.auto import describe_objects

    def hook(predictor, inference_state, masks):
        for obj_id, result in describe_objects(pipeline, source, prompts, masks).items():
            predictor.set_object_text(inference_state, obj_id, result.phrase)
            seconds = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
            log.info(
                "object %d: %r (caption %r, region %s from %s%s; %s)",
                obj_id, result.phrase, result.caption, result.box, result.roi_source,
                ", cached" if result.cached else "", seconds,
            )

    return hook


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
        import torch

        reason = "--random-weights" if args.random_weights else "no --checkpoint given"
        log.warning(
            "%s: running %s with RANDOM weights, seed %d (masks are not meaningful; timings are)",
            reason,
            args.model,
            RANDOM_WEIGHTS_SEED,
        )
        # the same random model in every command, so that e.g. an aligner fit on it fits it again
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
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
    hook = None
    if args.auto_text:
        if pruning is None or pruning.scorer != "router":
            raise InputError("--auto-text drives the router's text signal: use --method pruned with --scorer router")
        hook = _auto_text_hook(_auto_text_pipeline(args), source, prompts)
    predictor = _build(args, pruning)
    result = segment_video(
        predictor, source, prompts, args.out, overwrite=args.overwrite, overlay=args.overlay, on_prompted=hook
    )
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

    configs = [_pruning_config(args, retention, passes) for passes in args.mc_passes for retention in args.retention]
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

    from sam2prune.models import with_pruning

    baseline = _build(args)

    def build(pruning):
        return baseline if pruning is None else with_pruning(baseline, pruning)

    settings = BenchSettings(
        model=args.model,
        image_size=baseline.image_size,
        frames=len(source),
        threads=args.threads or torch.get_num_threads(),
        device=_device(args.device),
        random_weights=args.checkpoint is None,
        pruning=configs,
        bf16_autocast=args.bf16,
        warmup_frames=args.warmup,
    )
    on_prompted_for = None
    if args.auto_text:
        if configs[0].scorer != "router":
            raise InputError("--auto-text drives the router's text signal: use --scorer router")
        pipeline = _auto_text_pipeline(args)

        def on_prompted_for(frames):
            return _auto_text_hook(pipeline, frames, prompts)

    result = run_benchmark(settings, source, prompts, build=build, progress=log.info, on_prompted_for=on_prompted_for)
    print(markdown_table(result))
    print(
        f"\n{result['model']} at {result['image_size']} px, {result['frames']} frames (steady state: frames >= "
        f"{result['steady_from_frame']}), {result['device']}, {result['precision']}, {result['threads']} threads, scorer "
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


def _add_data_options(parser: argparse.ArgumentParser, *, default_dataset: str | None = None) -> None:
    """--dataset (required unless it has a default), --root, --split, --sequences, --limit."""
    from sam2prune.data.datasets import DATASETS

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        required=default_dataset is None,
        default=default_dataset,
        help="dataset layout (see `sam2prune eval --help`)" + (" (default: %(default)s)" if default_dataset else ""),
    )
    data.add_argument("--root", type=Path, required=True, metavar="ROOT", help="the dataset's root folder")
    data.add_argument("--split", help="set/split (default: the dataset's validation set: val, or valid for LVOS)")
    data.add_argument("--sequences", nargs="+", metavar="NAME", help="only these sequences")
    data.add_argument("--limit", type=int, metavar="N", help="only the first N sequences")


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    _add_data_options(parser)
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
    on_prompted_for = None
    if pruning is not None and pruning.auto_text:
        from sam2prune.evaluate import interior_point
        from sam2prune.prompts import ObjectPrompt

        pipeline = _auto_text_pipeline(args)

        def on_prompted_for(sequence):
            # the protocol's click on each object; the region is the box of SAM 2's mask for it
            prompts = []
            for obj_id in sequence.obj_ids:
                frame = sequence.first_frames[obj_id]
                click = interior_point(sequence.ground_truth(frame) == obj_id)
                prompts.append(ObjectPrompt(obj_id=obj_id, frame=frame, points=(click,), labels=(1,)))
            return _auto_text_hook(pipeline, sequence.source, prompts)

    records = evaluate_sequences(
        predictor, sequences, out_dir, protocol=protocol, device=torch.device(predictor.device), on_prompted_for=on_prompted_for
    )
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
    import json
    from sam2prune.models import with_pruning
    from sam2prune.report import load_reports, markdown_report, plot_tradeoff, write_text

    sequences = _select_sequences(args)
    _protocol(args)
    grid = [(None, "sam2")] if not args.no_baseline else []
    signal_sets = args.signal_sets or [args.signals]
    texts = args.texts or [args.text]
    phrasings: dict[str, list[tuple[str, str]]] = {}  # run label without text -> [(text, label)]
    for scorer in args.scorers:
        for signals in signal_sets if scorer == "router" else [None]:
            for passes in args.mc_passes if scorer == "router" and args.uncertainty == "mc" else [args.mc_passes[0]]:
                for retention in args.retention:
                    for number, text in enumerate(texts if scorer == "router" else [None]):
                        args.scorer, args.signals, args.text = scorer, signals, text
                        label = f"pruned_r{retention:g}_{scorer}"
                        if signals is not None:
                            label += "_" + "+".join(signals)
                        if scorer == "router" and args.uncertainty == "mc":
                            label += f"_T{passes}"
                        base_label = label
                        if len(texts) > 1 and text is not None:
                            label += f"_text{number + 1}"
                            phrasings.setdefault(base_label, []).append((text, label))
                        grid.append((_pruning_config(args, retention, passes), label))
    if not args.out.parent.is_dir():
        raise InputError(f"--out {args.out}: parent folder {args.out.parent} does not exist")
    args.out.mkdir(exist_ok=True)
    baseline = _build(args)
    run_dirs = []
    for pruning, label in grid:
        log.info("sweep: %s", label)
        predictor = baseline if pruning is None else with_pruning(baseline, pruning)
        _run_eval(args, predictor, pruning, sequences, args.out / label)
        run_dirs.append(args.out / label)
    reports = load_reports(run_dirs)
    table = markdown_report(reports)
    if phrasings:
        from sam2prune.evaluate import kept_token_overlap

        table += "\nRobustness to the phrasing of the target (kept-token IoU against the first phrasing):\n\n"
        table += "| run | phrasing | J&F | kept-token IoU vs first |\n|---|---|---|---|\n"
        for base_label, runs in phrasings.items():
            first_dir = args.out / runs[0][1]
            for text, label in runs:
                overall = json.loads((args.out / label / "report.json").read_text())["overall"]
                overlap = kept_token_overlap(first_dir, args.out / label)
                cell = "-" if overlap is None else f"{overlap:.3f}"
                table += f"| {base_label} | {text} | {overall['J&F-Mean'] * 100:.1f} | {cell} |\n"
    write_text(args.out / "report.md", table)
    print(table, end="")
    if args.plot:
        plot_tradeoff(args.out / "tradeoff.png", reports)
    print(f"report: {args.out / 'report.md'}")
    return 0


def cmd_fit_aligner(args: argparse.Namespace) -> int:
    """Fit the token-to-text projection on a dataset whose objects have phrases."""
    from sam2prune.router.semantic import fit_aligner, read_labels
    from sam2prune.text.encoders import load_text_encoder

    labels = read_labels(args.labels)
    if not args.out.parent.is_dir():
        raise InputError(f"--out {args.out}: folder {args.out.parent} does not exist")
    if args.ridge < 0 or args.frame_step < 1:
        raise InputError("--ridge must be >= 0 and --frame-step >= 1")
    sequences = _select_sequences(args)
    encoder = load_text_encoder(args.text_encoder)
    predictor = _build(args)
    aligner, stats = fit_aligner(predictor, sequences, labels, text_encoder=encoder, ridge=args.ridge, frame_step=args.frame_step)
    aligner.save(args.out)
    if stats["labels_not_found"]:
        log.warning("labels without a matching object in the dataset: %s", ", ".join(stats["labels_not_found"]))
    print(
        f"aligner fit on {stats['tokens']} tokens of {stats['objects']} objects over {stats['frames']} frames "
        f"(train mean cosine {stats['train_mean_cosine']:.3f}), text encoder {encoder.name}, -> {args.out}"
    )
    return 0


def cmd_train_router(args: argparse.Namespace) -> int:
    """Train the paper/learned router's MLP."""
    import json as json_module

    from sam2prune.router.fusion import save_router
    from sam2prune.router.semantic import Aligner, read_labels
    from sam2prune.text.encoders import load_text_encoder
    from sam2prune.router.train import collect_examples, train_router, training_scorer

    if args.epochs < 1 or args.learning_rate <= 0:
        raise InputError("--epochs must be >= 1 and --learning-rate > 0")
    if not args.out.parent.is_dir():
        raise InputError(f"--out {args.out}: folder {args.out.parent} does not exist")
    labels = read_labels(args.labels) if args.labels else None
    signals = args.signals or (("visual", "text", "uncertainty") if args.router == "paper" else ("visual", "uncertainty", "prior"))
    if labels and args.signals is None:
        signals = signals + ("text",)
    signals = tuple(name for name in SIGNALS if name in signals)
    if "text" in signals and (labels is None or args.aligner is None):
        raise InputError("the text signal needs --labels LABELS.json (object phrases) and --aligner ALIGNER.pt")
    sequences = _select_sequences(args)
    config = PruningConfig(
        scorer="prior",
        uncertainty=args.uncertainty,
        mc_passes=args.mc_passes,
        mc_dropout_p=args.mc_dropout_p,
        uncertainty_blocks=tuple(args.uncertainty_blocks),
        prior_dilation=args.prior_dilation,
        retention=args.retention,
        seed=args.seed,
    )
    predictor = _build(args, config)
    text_relevance = phrase_of = None
    if "text" in signals:
        from sam2prune.router.fusion import AlignedTextRelevance

        aligner = Aligner.load(args.aligner)
        text_relevance = AlignedTextRelevance(aligner, load_text_encoder(aligner.text_encoder))

        def phrase_of(sequence: str, obj_id: int) -> str:
            phrase = labels.get(f"{sequence}/{obj_id}")
            if phrase is None:
                raise InputError(f"--labels has no phrase for {sequence}/{obj_id}; every trained object needs one")
            return phrase

    scorer = training_scorer(predictor, config, tuple(signals), text_relevance)
    examples = collect_examples(predictor, sequences, scorer, phrase_of=phrase_of, holdout_every=args.holdout_every)
    module, history = train_router(
        examples,
        kind=args.router,
        channels=predictor.hidden_dim,
        signals=tuple(signals),
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        loss=args.loss,
        retention=args.retention,
        seed=args.seed,
    )
    save_router(args.out, module, channels=predictor.hidden_dim, signals=tuple(signals), hidden=module.mlp[0].out_features, extra={"history": history, "model": args.model})
    held_out = sum(e.held_out for e in examples)
    print(json_module.dumps(history[-1]))
    print(
        f"{args.router} router on signals {','.join(signals)}: {len(examples) - held_out} training and {held_out} held-out "
        f"examples; loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}; held-out recall of object tokens at "
        f"retention {args.retention:g}: {history[-1]['held_out_recall']:.3f} -> {args.out}"
    )
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    """Print the automatic description of the prompted object (or only refine --caption)."""
    import time

    from sam2prune.text.auto import load_refiner

    if args.caption is not None:
        start = time.perf_counter()
        refiner = load_refiner(args.refiner, max_words=args.max_words, device=_device(args.device))
        loaded = time.perf_counter()
        phrase = refiner.refine(args.caption)
        print(f"refiner: {refiner.name} (load {loaded - start:.2f} s, refine {time.perf_counter() - loaded:.2f} s)")
        print(phrase)
        return 0

    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import ObjectPrompt, check_prompts, prompts_from_arguments
    from sam2prune.text.auto import read_frame, top_objectness_box

    pipeline = _auto_text_pipeline(args)
    video = args.video if args.video is not None else embedded_clip()
    source = VideoSource.open(video)
    prompts = prompts_from_arguments(
        points=args.point, negatives=args.neg, box=args.box, mask=args.mask, frame=args.frame, obj_id=1
    )
    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)
    if args.frame >= len(source):
        raise InputError(f"--frame {args.frame} is out of range; the video has {len(source)} frames")
    if not prompts:
        start = time.perf_counter()
        frame = read_frame(source, args.frame)
        box = top_objectness_box(frame, args.detector_weights, device=_device(args.device))
        result = pipeline.describe(frame, box, "detector", video_key=f"{video}:{args.frame}", roi_seconds=time.perf_counter() - start)
    else:
        from sam2prune.text.auto import describe_objects

        masks = {}
        if prompts[0].points and prompts[0].box is None:
            # the region is the box of SAM 2's mask for the click
            from sam2prune.prompts import apply_prompts

            predictor = _build(args)
            state = predictor.init_state(source.head(args.frame + 1))
            masks = apply_prompts(predictor, state, prompts)
        result = describe_objects(pipeline, source, prompts, masks)[1]
    print(f"region: {result.box} from {result.roi_source}")
    print(f"caption: {result.caption}")
    timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.seconds.items())
    print(f"time: {timings}" + (" (cached result)" if result.cached else ""))
    print(f"phrase: {result.phrase}")
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
    _add_auto_text_options(segment)
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
    bench.add_argument(
        "--warmup",
        type=int,
        metavar="FRAMES",
        help="frames each predictor tracks untimed first (default: 3 on the CPU, the whole clip on CUDA, where "
        "kernels are planned per new tensor shape and the memory bank changes shape until it is full)",
    )
    bench.add_argument(
        "--bf16",
        action="store_true",
        help="run every predictor under bfloat16 autocast, as SAM 2's GPU examples do (CUDA only; default: float32)",
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    bench.add_argument("--plot", type=Path, metavar="FILE.png", help="plot ms/frame and bank size vs retention")
    _add_model_options(bench)
    _add_pruning_options(bench, retention_list=True, multi_mc=True)
    _add_auto_text_options(bench)
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
    _add_auto_text_options(evaluate)
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
    sweep.add_argument("--signal-sets", type=_signal_list, nargs="+", metavar="LIST", help="router signal subsets to compare, e.g. text text,uncertainty")
    sweep.add_argument("--texts", nargs="+", metavar="TEXT", help="several phrasings of the target (e.g. accurate, vague, human); one run each, compared")
    _add_model_options(sweep)
    _add_pruning_options(sweep, retention_list=True, multi_mc=True)
    sweep.set_defaults(handler=cmd_sweep)

    prompt = commands.add_parser(
        "prompt",
        help="describe the prompted object in a few words (region -> caption -> phrase)",
        description=(
            "Region of interest (the --box; else the box of SAM 2's mask for the --point click or of the --mask; "
            "with no prompt, the top-objectness proposal of a Faster R-CNN region proposal network from "
            "--detector-weights), cropped with a margin, captioned by --captioner, distilled by --refiner to at most "
            "--max-words words. Prints the region, the caption, each stage's time and the phrase. "
            "With --caption TEXT only the refiner runs, and the phrase is the last line."
        ),
    )
    prompt.add_argument("video", nargs="?", type=Path, metavar="VIDEO", help="folder of frames or a video file (default: the embedded clip)")
    prompt.add_argument("--caption", metavar="TEXT", help="refine this caption only")
    prompt.add_argument("--point", action="append", default=[], metavar="X,Y")
    prompt.add_argument("--neg", action="append", default=[], metavar="X,Y")
    prompt.add_argument("--box", metavar="X0,Y0,X1,Y1")
    prompt.add_argument("--mask", type=Path, metavar="PNG")
    prompt.add_argument("--frame", type=_frame_index, default=0, metavar="N")
    prompt.add_argument("--detector-weights", type=Path, metavar="FILE", help="torchvision fasterrcnn_resnet50_fpn weights, for the no-prompt case")
    _add_auto_text_options(prompt, switch=False)
    _add_model_options(prompt)
    prompt.set_defaults(handler=cmd_prompt, auto_text=True)

    fit = commands.add_parser(
        "fit-aligner",
        help="fit the token-to-text projection for the text signal",
        description=(
            "Closed-form ridge least squares from SAM 2 token features to the text space: tokens inside each "
            "labelled object are mapped to its phrase's embedding, background tokens to that of 'background'. "
            'LABELS.json maps "<sequence>/<object id>" to a phrase.'
        ),
    )
    _add_data_options(fit, default_dataset="davis")
    fit.add_argument("--labels", type=Path, required=True, metavar="LABELS.json")
    fit.add_argument("--out", type=Path, required=True, metavar="ALIGNER.pt")
    fit.add_argument("--text-encoder", default="minilm", help="minilm, clip:<folder or hub id>, open_clip:<arch>:<file> (default: %(default)s)")
    fit.add_argument("--ridge", type=float, default=1.0, help="L2 penalty (default: %(default)s)")
    fit.add_argument("--frame-step", type=int, default=1, help="use every Nth annotated frame (default: %(default)s)")
    _add_model_options(fit)
    fit.set_defaults(handler=cmd_fit_aligner)

    train = commands.add_parser(
        "train-router",
        help="train the paper/learned router on a dataset with masks",
        description=(
            "Trains the router MLP: per token, the target is the fraction of its patch inside the dilated ground-truth "
            "mask; signals as the tracker computes them (prior from the previous annotated frame). Frames whose index "
            "is divisible by --holdout-every are held out; reports their recall of object tokens at --retention."
        ),
    )
    _add_data_options(train, default_dataset="davis")
    train.add_argument("--out", type=Path, required=True, metavar="ROUTER.pt")
    train.add_argument("--router", choices=("learned", "paper"), default="learned", help="default: %(default)s")
    train.add_argument("--labels", type=Path, metavar="LABELS.json", help="object phrases, for the text signal")
    train.add_argument("--aligner", metavar="ALIGNER.pt", help="token-to-text projection, for the text signal")
    train.add_argument("--signals", type=_signal_list, metavar="LIST", help="default: paper visual,uncertainty(,text); learned visual,uncertainty,prior(,text)")
    train.add_argument("--epochs", type=int, default=20, help="default: %(default)s")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="default: %(default)s")
    train.add_argument("--loss", choices=("bce", "ranking"), default="bce", help="default: %(default)s")
    train.add_argument("--retention", type=float, default=_PRUNING_DEFAULTS.retention, help="for the held-out recall (default: %(default)s)")
    train.add_argument("--holdout-every", type=int, default=5, help="default: %(default)s")
    train.add_argument("--uncertainty", choices=UNCERTAINTY_MODES, default=_PRUNING_DEFAULTS.uncertainty)
    train.add_argument("--mc-passes", type=int, default=_PRUNING_DEFAULTS.mc_passes)
    train.add_argument("--mc-dropout-p", type=float, default=_PRUNING_DEFAULTS.mc_dropout_p)
    train.add_argument("--uncertainty-blocks", type=_int_list, default=_PRUNING_DEFAULTS.uncertainty_blocks, metavar="LIST")
    train.add_argument("--prior-dilation", type=int, default=_PRUNING_DEFAULTS.prior_dilation)
    train.add_argument("--seed", type=int, default=_PRUNING_DEFAULTS.seed)
    _add_model_options(train)
    train.set_defaults(handler=cmd_train_router)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # our messages only: third-party libraries keep their own (quiet) logging defaults
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sam2prune: %(message)s"))
    log.handlers = [handler]
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
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
