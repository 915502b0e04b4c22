"""The ``sam2prune`` console script: one subcommand per job, each a plain function."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from dataclasses import dataclass, fields

from sam2prune.config import (
    FILL_MODES,
    ROUTER_ONLY_FIELDS,
    ROUTERS,
    SCORERS,
    SIGNALS,
    UNCERTAINTY_MODES,
    ProtocolConfig,
    PruningConfig,
    ineffective_fields,
)
from sam2prune.errors import InputError, UserError

log = logging.getLogger("sam2prune")

DEFAULT_MODEL = "sam2.1_hiera_t"
DEFAULT_MAX_WORDS = 6  # text.auto.DEFAULT_MAX_WORDS, without importing torch for --help
RANDOM_WEIGHTS_SEED = 0


def embedded_clip() -> Path:
    """The short real clip shipped with the package (24 frames of SAM 2's ``bedroom`` demo)."""
    return Path(str(resources.files("sam2prune") / "assets" / "bedroom"))


def _add_model_options(parser: argparse.ArgumentParser, *, results: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="sam2.1_hiera_{t,s,b+,l}, sam2_hiera_{t,s,b+,l} or a SAM 2 YAML config (default: %(default)s)",
    )
    if results:
        where = (
            "official SAM 2 checkpoint (.pt) for --model (default: ./checkpoints/<official file name> if it is "
            "there; `sam2prune models` lists the names); without one the command refuses to run unless "
            "--random-weights is given"
        )
    else:
        where = "official SAM 2 checkpoint (.pt) for --model (default: random weights, which time the same)"
    group.add_argument("--checkpoint", type=Path, metavar="FILE.pt", help=where)
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="build the real architecture with random weights (masks are meaningless, timings are real)",
    )
    group.add_argument(
        "--image-size",
        type=int,
        metavar="PIXELS",
        help="model input size in pixels, a multiple of 32 (default: the model's, 1024)",
    )
    group.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N (default: %(default)s)",
    )


@dataclass(frozen=True)
class Weights:
    """Which weights a command builds its model with."""

    checkpoint: Path | None  # None: random weights
    found_locally: bool = False  # taken from ./checkpoints/ without --checkpoint


def _weights(args: argparse.Namespace, *, required: bool) -> Weights:
    """Resolve the model options to a checkpoint or random weights, before anything heavy.

    ``required``: the command produces results (masks, scores, aligners, routers) that are
    meaningless with random weights, so it refuses to run without a checkpoint unless
    ``--random-weights`` is given. A benchmark only times, so random weights are its default.

    Raises:
        InputError, CheckpointError: unknown model, both options, or no checkpoint found.
    """
    from sam2prune.errors import CheckpointError
    from sam2prune.models import find_local_checkpoint, missing_checkpoint_message, resolve_config

    resolve_config(args.model)  # unknown model names fail before anything heavy happens
    if args.checkpoint is not None and args.random_weights:
        raise InputError("--checkpoint and --random-weights exclude each other")
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise CheckpointError(f"--checkpoint {args.checkpoint} does not exist")
        return Weights(args.checkpoint)
    if args.random_weights:
        return Weights(None)
    local = find_local_checkpoint(args.model)
    if local is not None:
        return Weights(local, found_locally=True)
    if required:
        raise CheckpointError(missing_checkpoint_message(args.model, cli=True))
    return Weights(None)


_PRUNING_DEFAULTS = PruningConfig()
# bench and sweep measure several retentions by default; everything else defaults to the dataclass
RETENTION_GRID = (1.0, 0.5, 0.3, 0.1)


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


def _default(name: str) -> str:
    value = getattr(_PRUNING_DEFAULTS, name)
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _add_pruning_options(parser: argparse.ArgumentParser, *, retention_list: bool = False, multi_mc: bool = False) -> None:
    """Flags mapping one to one onto PruningConfig fields. Their parser default is None (not
    given): the defaults live in the dataclass only, and an option given in a mode where it
    has no effect can be refused (``_pruning_configs``)."""
    group = parser.add_argument_group("token pruning")
    if retention_list:
        group.add_argument(
            "--retention",
            type=float,
            nargs="+",
            metavar="R",
            help=f"retentions to measure, each in (0, 1] (default: {' '.join(map(str, RETENTION_GRID))})",
        )
    else:
        group.add_argument(
            "--retention",
            type=float,
            metavar="R",
            help=f"fraction of tokens kept per frame, in (0, 1] (default: {_default('retention')})",
        )
    group.add_argument(
        "--scorer",
        choices=SCORERS,
        help="token ranking: router = fusion of --signals; prior = previous mask (dilated) alone; uniform = "
        f"regular grid; random (default: {_default('scorer')})",
    )
    group.add_argument(
        "--prune-conditioning-frames",
        action="store_true",
        default=None,
        help="also prune the memory of prompted frames (default: kept dense)",
    )
    group.add_argument(
        "--fill",
        choices=FILL_MODES,
        help="dropped positions after memory attention: norm = LayerNorm(x + 0.1 pos), raw = encoder features "
        f"(default: {_default('fill')})",
    )
    group.add_argument(
        "--prior-dilation",
        type=int,
        metavar="TOKENS",
        help="dilation of the previous mask in tokens, for the prior scorer and the router's prior signal "
        f"(default: {_default('prior_dilation')})",
    )
    group.add_argument(
        "--seed",
        type=int,
        help="seed of the random scorer, of Monte-Carlo dropout masks and of an untrained MLP router "
        f"(default: {_default('seed')})",
    )
    router = parser.add_argument_group("router (with --scorer router)")
    router.add_argument(
        "--router",
        choices=ROUTERS,
        help="default = weighted sum of the normalised signals (no training); paper = the source paper's MLP; "
        f"learned = MLP over all signals; paper/learned load --router-weights (default: {_default('router')})",
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
        router.add_argument(
            "--mc-passes",
            type=int,
            nargs="+",
            metavar="T",
            help=f"dropout samples T for --uncertainty mc; several values are each measured (default: {_default('mc_passes')})",
        )
    else:
        router.add_argument(
            "--mc-passes", type=int, metavar="T", help=f"dropout samples T for --uncertainty mc (default: {_default('mc_passes')})"
        )
    router.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_MODES,
        help=f"analytic = closed-form dropout variance in one pass; mc = sampled (default: {_default('uncertainty')})",
    )
    router.add_argument(
        "--mc-dropout-p", type=float, metavar="P", help=f"dropout rate of the uncertainty signal (default: {_default('mc_dropout_p')})"
    )
    router.add_argument(
        "--uncertainty-blocks",
        type=_int_list,
        metavar="LIST",
        help=f"Hiera blocks with dropout, comma-separated (default: {_default('uncertainty_blocks')})",
    )
    router.add_argument(
        "--signal-weights",
        type=_float_list,
        metavar="P,T,U,V",
        help=f"weights of prior, text, uncertainty, visual in the default router (default: {_default('signal_weights')})",
    )


_PRUNING_FIELDS = tuple(f.name for f in fields(PruningConfig))
_AUTO_TEXT_OPTIONS = ("captioner", "refiner", "max_words", "caption_prompt", "cache_dir")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given_pruning_options(args: argparse.Namespace) -> dict[str, object]:
    """The PruningConfig fields the user set on the command line (``None``: not given)."""
    given = {}
    for name in _PRUNING_FIELDS:
        value = getattr(args, name, None)
        if value is not None and not (name == "auto_text" and value is False):
            given[name] = value
    return given


def _refuse_pruning_options_for_sam2(args: argparse.Namespace) -> None:
    """With ``--method sam2`` nothing is pruned: every pruning option would be silently ignored."""
    given = [_option(name) for name in _given_pruning_options(args)]
    given += [_option(name) for name in _AUTO_TEXT_OPTIONS if getattr(args, name, None) is not None]
    if given:
        raise InputError(f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect with --method sam2 (unpruned)")


def _build_pruning_configs(
    args: argparse.Namespace,
    *,
    retentions: list[float] | None = None,
    mc_passes: list[int | None] | None = None,
    variant: dict[str, object] | None = None,
) -> list[PruningConfig]:
    """The PruningConfig of each (mc_passes, retention) combination: the options given on the
    command line, then ``variant`` (fields a sweep varies), over the dataclass defaults.

    Raises:
        InputError: an invalid value.
    """
    given = {name: value for name, value in _given_pruning_options(args).items() if name not in ("retention", "mc_passes")}
    given.update(variant or {})
    if retentions is None:
        retention = getattr(args, "retention", None)
        retentions = retention if isinstance(retention, list) else [retention if retention is not None else _PRUNING_DEFAULTS.retention]
    if mc_passes is None:
        passes = getattr(args, "mc_passes", None)
        mc_passes = passes if isinstance(passes, list) else [passes]
    configs = []
    try:
        for passes in mc_passes:
            for retention in retentions:
                extra = {"mc_passes": passes} if passes is not None else {}
                configs.append(PruningConfig(retention=retention, **{**given, **extra}))
    except (TypeError, ValueError) as error:
        raise InputError(f"pruning options: {error}") from error
    return configs


def _refuse_ineffective_options(args: argparse.Namespace, configs: list[PruningConfig], *, varied: set[str] = frozenset()) -> None:
    """Refuse an option given on the command line that has no effect in any of ``configs``
    (e.g. ``--router`` with ``--scorer prior``): silently ignoring it would mislead."""
    explicit = [name for name in _given_pruning_options(args) if name != "retention" and name not in varied]
    unused = set(explicit)
    for config in configs:
        unused &= set(ineffective_fields(config, explicit))
    if unused:
        names = [name for name in explicit if name in unused]
        reason = _why_ineffective(configs[0], names[0])
        raise InputError(
            f"{', '.join(_option(n) for n in names)} {'has' if len(names) == 1 else 'have'} no effect here ({reason}); "
            f"remove {'it' if len(names) == 1 else 'them'}"
        )


def _pruning_configs(args: argparse.Namespace, *, retentions: list[float] | None = None) -> list[PruningConfig]:
    """``_build_pruning_configs`` checked by ``_refuse_ineffective_options``."""
    configs = _build_pruning_configs(args, retentions=retentions)
    _refuse_ineffective_options(args, configs)
    return configs


def _why_ineffective(config: PruningConfig, name: str) -> str:
    if config.scorer != "router" and name in ROUTER_ONLY_FIELDS:
        return f"{_option(name)} is for --scorer router, and the scorer is {config.scorer}"
    if name in ("text", "aligner", "auto_text"):
        return "the text signal is not among the router's --signals"
    if name in ("uncertainty", "mc_dropout_p", "uncertainty_blocks"):
        return "the uncertainty signal is not among the router's --signals"
    if name == "mc_passes":
        return "Monte-Carlo passes are drawn with --uncertainty mc only"
    if name == "router_weights":
        return "the default router has no weights; --router-weights is for --router paper or learned"
    if name == "signal_weights":
        return "--signal-weights weigh the default router's signals"
    if name == "prior_dilation":
        return "no prior is used: the scorer is not prior and the router has no prior signal"
    if name == "seed":
        return "nothing random is drawn: the seed is for --scorer random, --uncertainty mc or an untrained MLP router"
    return "not used in this mode"


def _add_auto_text_options(parser: argparse.ArgumentParser, *, switch: bool = True) -> None:
    group = parser.add_argument_group("automatic text prompt (region -> caption -> phrase)")
    if switch:
        group.add_argument(
            "--auto-text",
            action="store_true",
            help="describe each prompted object with --captioner and use the phrase for the text signal (needs --aligner)",
        )
    group.add_argument("--captioner", metavar="MODEL", help="image-to-text model: a transformers folder or hub id (BLIP, BLIP-2, LLaVA, Florence-2, ...)")
    group.add_argument(
        "--refiner",
        metavar="MODEL",
        help="caption -> phrase: parse (default: the subject noun phrase, from spaCy's dependency parse; needs the "
        "text extra), span (the caption span closest to the caption in MiniLM embedding) or a seq2seq/causal LM "
        "folder or hub id",
    )
    group.add_argument("--max-words", type=int, metavar="N", help=f"words in the phrase at most (default: {DEFAULT_MAX_WORDS})")
    group.add_argument("--caption-prompt", metavar="TEXT", help="what the captioner is asked (default: an object-centric description request)")
    group.add_argument("--cache-dir", type=Path, metavar="DIR", help="cache of generated phrases (default: ~/.cache/sam2prune/auto_text)")


def _refuse_auto_text_options_without_switch(args: argparse.Namespace) -> None:
    given = [_option(name) for name in _AUTO_TEXT_OPTIONS if getattr(args, name, None) is not None]
    if given and not getattr(args, "auto_text", False):
        raise InputError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} used by --auto-text only; add --auto-text or remove {'it' if len(given) == 1 else 'them'}")


def _auto_text_pipeline(args: argparse.Namespace, *, command: str):
    from sam2prune.text.auto import DEFAULT_CAPTION_PROMPT, AutoTextPipeline

    if not args.captioner:
        needs = "--auto-text needs" if command != "prompt" else "`prompt` needs"
        raise InputError(f"{needs} --captioner MODEL (an image-to-text model folder or hub id)")
    return AutoTextPipeline(
        args.captioner,
        refiner=args.refiner,
        max_words=args.max_words or DEFAULT_MAX_WORDS,
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


def _build(args: argparse.Namespace, weights: Weights, pruning: PruningConfig | None = None):
    """Build the predictor the model options ask for, saying which weights it runs with."""
    from sam2prune.models import build_predictor

    if weights.checkpoint is None:
        log.warning(
            "running %s with RANDOM weights, seed %d (masks are not meaningful; timings are)",
            args.model,
            RANDOM_WEIGHTS_SEED,
        )
    else:
        found = " (found in ./checkpoints/)" if weights.found_locally else ""
        log.info("loading checkpoint %s%s", weights.checkpoint, found)
    device = _device(args.device)
    log.debug("model %s, image size %s, device %s, pruning %s", args.model, args.image_size or "default", device, pruning)
    return build_predictor(
        args.model,
        checkpoint=weights.checkpoint,
        random_weights=weights.checkpoint is None,
        # the same random model in every command, so that e.g. an aligner fit on it fits it again
        seed=RANDOM_WEIGHTS_SEED,
        device=device,
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

    video = args.video if args.video is not None else embedded_clip()
    inputs = [("VIDEO", video)] + [(option, path) for option, path in (("--prompts", args.prompts), ("--mask", args.mask)) if path is not None]
    check_output_dir(args.out, overwrite=args.overwrite, inputs=inputs)
    if args.overlay is not None:
        check_overlay_path(args.overlay)
        if args.overlay.resolve().parent == args.out.resolve() or args.out.resolve() in args.overlay.resolve().parents:
            raise InputError(f"--overlay {args.overlay} lies inside --out {args.out}, which is replaced as a whole; write it elsewhere")
    elif args.fps is not None:
        raise InputError("--fps is the frame rate of the --overlay video; it has no effect without --overlay")
    if args.fps is not None and not args.fps > 0:
        raise InputError(f"--fps must be > 0, got {args.fps}")
    if args.method == "sam2":
        _refuse_pruning_options_for_sam2(args)
    _refuse_auto_text_options_without_switch(args)
    pruning = _pruning_configs(args)[0] if args.method == "pruned" else None
    weights = _weights(args, required=True)
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

    hook = None
    if args.auto_text:
        if pruning is None or pruning.scorer != "router":
            raise InputError("--auto-text drives the router's text signal: use --method pruned with --scorer router")
        hook = _auto_text_hook(_auto_text_pipeline(args, command="segment"), source, prompts)
    predictor = _build(args, weights, pruning)
    result = segment_video(
        predictor,
        source,
        prompts,
        args.out,
        overwrite=args.overwrite,
        overlay=args.overlay,
        overlay_fps=args.fps,
        on_prompted=hook,
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

    from sam2prune.bench import STEADY_FROM_FRAME, BenchSettings, markdown_table, plot, run_benchmark
    from sam2prune.data.video import VideoSource
    from sam2prune.fsutil import atomic_write_json, check_output_file
    from sam2prune.prompts import ObjectPrompt, load_prompts_file, parse_numbers

    _refuse_auto_text_options_without_switch(args)
    configs = _pruning_configs(args, retentions=args.retention or list(RETENTION_GRID))
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.frames <= STEADY_FROM_FRAME:
        raise InputError(
            f"--frames {args.frames}: need more than {STEADY_FROM_FRAME} frames to measure the steady state "
            f"(frames >= {STEADY_FROM_FRAME}, once SAM 2's 7-frame memory bank is full)"
        )
    if args.warmup is not None and args.warmup < 1:
        raise InputError(f"--warmup must be >= 1 frame, got {args.warmup}")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            check_output_file(path, option=option)
    weights = _weights(args, required=False)
    source = VideoSource.open(args.video if args.video is not None else embedded_clip())
    if len(source) <= STEADY_FROM_FRAME:
        raise InputError(
            f"the video has {len(source)} frames: need more than {STEADY_FROM_FRAME} to measure the steady state"
        )
    source = source.head(min(args.frames, len(source)))
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
    on_prompted_for = None
    if args.auto_text:
        if configs[0].scorer != "router":
            raise InputError("--auto-text drives the router's text signal: use --scorer router")
        pipeline = _auto_text_pipeline(args, command="bench")

        def on_prompted_for(frames):
            return _auto_text_hook(pipeline, frames, prompts)

    from sam2prune.models import with_pruning

    baseline = _build(args, weights)

    def build(pruning):
        return baseline if pruning is None else with_pruning(baseline, pruning)

    settings = BenchSettings(
        model=args.model,
        image_size=baseline.image_size,
        frames=len(source),
        threads=args.threads or torch.get_num_threads(),
        device=_device(args.device),
        random_weights=weights.checkpoint is None,
        pruning=configs,
        bf16_autocast=args.bf16,
        warmup_frames=args.warmup,
    )
    result = run_benchmark(settings, source, prompts, build=build, progress=log.info, on_prompted_for=on_prompted_for)
    print(markdown_table(result))
    print(
        f"\n{result['model']} at {result['image_size']} px, {result['frames']} frames (steady state: frames >= "
        f"{result['steady_from_frame']}), {result['device']}, {result['precision']}, {result['threads']} threads, scorer "
        f"{configs[0].scorer}, conditioning frames {'pruned' if configs[0].prune_conditioning_frames else 'dense'}"
        + (", RANDOM weights" if result["random_weights"] else "")
    )
    if args.json is not None:
        atomic_write_json(args.json, result)
        print(f"results: {args.json}")
    if args.plot is not None:
        plot(args.plot, result)
        print(f"plot: {args.plot}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score a results folder against DAVIS-layout ground truth (official semi-supervised protocol)."""
    from sam2prune.fsutil import check_output_location, check_writable_folder, make_output_dir
    from sam2prune.scoring import GLOBAL_COLUMNS, read_sequence_list, score_results, write_official_csvs

    if not args.results.is_dir():
        raise InputError(f"--results {args.results}: folder does not exist")
    if not args.gt_root.is_dir():
        raise InputError(f"--gt-root {args.gt_root}: folder does not exist")
    if args.sequences:
        annotations = args.gt_root / "Annotations" / "480p"
        missing = [name for name in args.sequences if not (annotations / name).is_dir()]
        if missing:
            raise InputError(f"--sequences: {', '.join(missing)} not in {annotations}")
    names = args.sequences or read_sequence_list(args.gt_root, args.set)
    out_dir = args.out if args.out is not None else args.results
    if out_dir.is_dir():
        check_writable_folder(out_dir, option=f"--out {out_dir}")
    else:
        check_output_location(out_dir)
    measures, scores = score_results(args.gt_root, args.results, set_name=args.set, sequences=names)
    make_output_dir(out_dir)
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
    protocol.add_argument(
        "--refine-below",
        type=float,
        metavar="J&F",
        help=f"refine frames whose J&F (a fraction) is below this (default: {defaults.refine_below})",
    )
    protocol.add_argument(
        "--clicks-per-round", type=int, metavar="N", help=f"corrective clicks per round (default: {defaults.clicks_per_round})"
    )
    protocol.add_argument(
        "--max-rounds", type=int, metavar="N", help=f"refinement rounds per sequence at most (default: {defaults.max_rounds})"
    )


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
    given = {name: getattr(args, name) for name in _PROTOCOL_FLAGS if getattr(args, name, None) is not None}
    try:
        return ProtocolConfig(**given)
    except ValueError as error:
        raise InputError(f"protocol options: {error}") from error


def _run_eval(args: argparse.Namespace, weights: Weights, predictor, pruning, sequences, out_dir: Path) -> dict:
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
        checkpoint=str(weights.checkpoint) if weights.checkpoint is not None else None,
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

        pipeline = _auto_text_pipeline(args, command="eval")

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
        f"J&F {overall['J&F-Mean']:.3f}  J {overall['J-Mean']:.3f}  F {overall['F-Mean']:.3f}  "
        f"{overall['fps']:.2f} frames/s  peak memory {overall['peak_memory_mib']:.0f} MiB  "
        f"kept {overall['kept_fraction']:.2f}  refinement rounds {overall['refinement_rounds']}, clicks {overall['clicks']}  "
        f"({overall['sequences']} sequences, {overall['objects']} objects) -> {out_dir}"
    )


def _check_run_folder(args: argparse.Namespace) -> None:
    from sam2prune.fsutil import check_output_location

    check_output_location(args.out, inputs=[("--root", args.root)])


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the interactive protocol on a dataset and score it."""
    _check_run_folder(args)
    if args.method == "sam2":
        _refuse_pruning_options_for_sam2(args)
    _refuse_auto_text_options_without_switch(args)
    pruning = _pruning_configs(args)[0] if args.method == "pruned" else None
    _protocol(args)
    weights = _weights(args, required=True)
    sequences = _select_sequences(args)
    predictor = _build(args, weights, pruning)
    report = _run_eval(args, weights, predictor, pruning, sequences, args.out)
    _print_overall(report, args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Table-1-style markdown across runs."""
    from sam2prune.fsutil import atomic_write_text, check_output_file
    from sam2prune.report import load_reports, markdown_report, plot_tradeoff

    for option, path in (("--out", args.out), ("--plot", args.plot)):
        if path is not None:
            check_output_file(path, option=option)
    reports = load_reports(args.runs)
    text = markdown_report(reports)
    if args.out is not None:
        atomic_write_text(args.out, text)
    print(text, end="")
    if args.plot is not None:
        plot_tradeoff(args.plot, reports)
        print(f"plot: {args.plot}")
    return 0


def _sweep_grid(args: argparse.Namespace) -> list[tuple[PruningConfig | None, str, str | None]]:
    """(config or None for unpruned SAM 2, run label, label of the run without its text) of
    every run a sweep asks for, in order."""
    for single, plural in (("scorer", "scorers"), ("signals", "signal-sets"), ("text", "texts")):
        if getattr(args, single) is not None and getattr(args, plural.replace("-", "_")) is not None:
            raise InputError(f"--{single} and --{plural} exclude each other: a sweep varies --{plural}")
    scorers = args.scorers or [args.scorer or _PRUNING_DEFAULTS.scorer]
    signal_sets = args.signal_sets or [None]
    texts = args.texts or [None]
    retentions = args.retention or list(RETENTION_GRID)
    uncertainty = args.uncertainty or _PRUNING_DEFAULTS.uncertainty
    grid: list[tuple[PruningConfig | None, str, str | None]] = [] if args.no_baseline else [(None, "sam2", None)]
    configs: list[PruningConfig] = []
    for scorer in scorers:
        router = scorer == "router"
        for signals in signal_sets if router else [None]:
            for number, text in enumerate(texts if router else [None]):
                variant: dict[str, object] = {"scorer": scorer}
                if signals is not None:
                    variant["signals"] = signals
                if text is not None:
                    variant["text"] = text
                passes = args.mc_passes if router and uncertainty == "mc" and args.mc_passes else [None]
                for config in _build_pruning_configs(args, retentions=retentions, mc_passes=passes, variant=variant):
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
        _refuse_ineffective_options(args, configs, varied=varied)
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    """Evaluate a grid of pruning settings (plus unpruned SAM 2) and tabulate them."""
    from sam2prune.fsutil import atomic_write_text, make_output_dir, read_json
    from sam2prune.models import with_pruning
    from sam2prune.report import load_reports, markdown_report, plot_tradeoff

    _check_run_folder(args)
    grid = _sweep_grid(args)
    if not grid:
        raise InputError("nothing to sweep: --no-baseline and no pruned setting")
    _protocol(args)
    weights = _weights(args, required=True)
    sequences = _select_sequences(args)
    make_output_dir(args.out)
    baseline = _build(args, weights)
    run_dirs = []
    phrasings: dict[str, list[tuple[str, str]]] = {}  # run label without text -> [(text, label)]
    for pruning, label, base_label in grid:
        log.info("sweep: %s", label)
        predictor = baseline if pruning is None else with_pruning(baseline, pruning)
        _run_eval(args, weights, predictor, pruning, sequences, args.out / label)
        run_dirs.append(args.out / label)
        if base_label is not None and pruning is not None and pruning.text is not None:
            phrasings.setdefault(base_label, []).append((pruning.text, label))
    reports = load_reports(run_dirs)
    table = markdown_report(reports)
    if phrasings:
        from sam2prune.evaluate import kept_token_overlap

        table += "\nRobustness to the phrasing of the target (kept-token IoU against the first phrasing):\n\n"
        table += "| run | phrasing | J&F | kept-token IoU vs first |\n|---|---|---|---|\n"
        for base_label, runs in phrasings.items():
            first_dir = args.out / runs[0][1]
            for text, label in runs:
                overall = read_json(args.out / label / "report.json", what="run report")["overall"]
                overlap = kept_token_overlap(first_dir, args.out / label)
                cell = "-" if overlap is None else f"{overlap:.3f}"
                table += f"| {base_label} | {text} | {overall['J&F-Mean']:.3f} | {cell} |\n"
    atomic_write_text(args.out / "report.md", table)
    print(table, end="")
    if args.plot:
        plot_tradeoff(args.out / "tradeoff.png", reports)
    print(f"report: {args.out / 'report.md'}")
    return 0


def cmd_fit_aligner(args: argparse.Namespace) -> int:
    """Fit the token-to-text projection on a dataset whose objects have phrases."""
    from sam2prune.router.semantic import fit_aligner, read_labels
    from sam2prune.text.encoders import load_text_encoder

    from sam2prune.fsutil import check_output_file

    check_output_file(args.out, option="--out")
    labels = read_labels(args.labels)
    if args.ridge < 0 or args.frame_step < 1:
        raise InputError("--ridge must be >= 0 and --frame-step >= 1")
    weights = _weights(args, required=True)
    sequences = _select_sequences(args)
    encoder = load_text_encoder(args.text_encoder)
    predictor = _build(args, weights)
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

    from sam2prune.fsutil import check_output_file
    from sam2prune.router.fusion import save_router
    from sam2prune.router.semantic import Aligner, read_labels
    from sam2prune.router.train import collect_examples, train_router, training_scorer
    from sam2prune.text.encoders import load_text_encoder

    if args.epochs < 1 or args.learning_rate <= 0:
        raise InputError("--epochs must be >= 1 and --learning-rate > 0")
    if args.holdout_every < 2:
        raise InputError(f"--holdout-every must be >= 2 (every frame would be held out), got {args.holdout_every}")
    check_output_file(args.out, option="--out")
    labels = read_labels(args.labels) if args.labels else None
    signals = args.signals or (("visual", "text", "uncertainty") if args.router == "paper" else ("visual", "uncertainty", "prior"))
    if labels and args.signals is None:
        signals = signals + ("text",)
    signals = tuple(name for name in SIGNALS if name in signals)
    if "text" in signals and (labels is None or args.aligner is None):
        raise InputError("the text signal needs --labels LABELS.json (object phrases) and --aligner ALIGNER.pt")
    try:
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
    except ValueError as error:
        raise InputError(f"router options: {error}") from error
    weights = _weights(args, required=True)
    sequences = _select_sequences(args)
    predictor = _build(args, weights, config)
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
        unused = [name for name, given in (
            ("VIDEO", args.video is not None), ("--point", args.point), ("--neg", args.neg), ("--box", args.box is not None),
            ("--mask", args.mask is not None), ("--frame", args.frame is not None), ("--captioner", args.captioner is not None),
            ("--detector-weights", args.detector_weights is not None), ("--caption-prompt", args.caption_prompt is not None),
            ("--checkpoint", args.checkpoint is not None), ("--random-weights", args.random_weights),
        ) if given]
        if unused:
            raise InputError(f"with --caption only the refiner runs: {', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect")
        start = time.perf_counter()
        refiner = load_refiner(args.refiner, max_words=args.max_words or DEFAULT_MAX_WORDS, device=_device(args.device))
        loaded = time.perf_counter()
        phrase = refiner.refine(args.caption)
        print(f"refiner: {refiner.name} (load {loaded - start:.2f} s, refine {time.perf_counter() - loaded:.2f} s)")
        print(phrase)
        return 0

    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import ObjectPrompt, check_prompts, prompts_from_arguments
    from sam2prune.text.auto import read_frame, top_objectness_box

    pipeline = _auto_text_pipeline(args, command="prompt")
    frame_idx = args.frame if args.frame is not None else 0
    prompts = prompts_from_arguments(
        points=args.point, negatives=args.neg, box=args.box, mask=args.mask, frame=frame_idx, obj_id=1
    )
    needs_sam = bool(prompts) and bool(prompts[0].points) and prompts[0].box is None
    if needs_sam:
        weights = _weights(args, required=True)
    elif args.checkpoint is not None or args.random_weights:
        raise InputError("--checkpoint/--random-weights: SAM 2 runs only for a --point prompt (its mask gives the region)")
    if args.detector_weights is not None and prompts:
        raise InputError("--detector-weights is for the no-prompt case (the top-objectness proposal); a prompt was given")
    video = args.video if args.video is not None else embedded_clip()
    source = VideoSource.open(video)
    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)
    if frame_idx >= len(source):
        raise InputError(f"--frame {frame_idx} is out of range; the video has {len(source)} frames")
    if not prompts:
        start = time.perf_counter()
        frame = read_frame(source, frame_idx)
        box = top_objectness_box(frame, args.detector_weights, device=_device(args.device))
        result = pipeline.describe(frame, box, "detector", video_key=f"{video}:{frame_idx}", roi_seconds=time.perf_counter() - start)
    else:
        from sam2prune.text.auto import describe_objects

        masks = {}
        if needs_sam:
            # the region is the box of SAM 2's mask for the click
            from sam2prune.prompts import apply_prompts

            predictor = _build(args, weights)
            state = predictor.init_state(source.head(frame_idx + 1))
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


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def _command(commands, name: str, *, help: str, description: str, examples: tuple[str, ...], epilog: str = ""):
    """A subcommand whose --help keeps the description's and epilog's line breaks and ends
    with an example command line."""
    return commands.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(epilog + "\n\n" if epilog else "") + _examples(*examples),
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import sam2prune

    try:
        sam2_version = version("sam2")
    except PackageNotFoundError:
        sam2_version = "not installed"
    return f"sam2prune {sam2prune.__version__} (sam2 {sam2_version})"


class _VersionAction(argparse.Action):
    """``--version``, reading the installed sam2's version only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(_version())
        parser.exit()


def cmd_models(args: argparse.Namespace) -> int:
    """List the official models, their checkpoints and whether each is found locally."""
    from sam2prune.models import CHECKPOINT_DIR, MODELS, official_input_size

    rows = [("model", "checkpoint file", "input size", f"in ./{CHECKPOINT_DIR}/")]
    for name, spec in MODELS.items():
        found = (CHECKPOINT_DIR / spec.checkpoint_file).is_file()
        rows.append((name, spec.checkpoint_file, f"{official_input_size(spec)} px", "found" if found else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(
        f"\ncheckpoints: {MODELS['sam2.1_hiera_t'].checkpoint_url.rsplit('/', 1)[0]}/<file> (SAM 2.1), "
        f"{MODELS['sam2_hiera_t'].checkpoint_url.rsplit('/', 1)[0]}/<file> (SAM 2); put them in ./{CHECKPOINT_DIR}/ "
        "or pass --checkpoint FILE"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sam2prune.data import datasets as datasets_module

    parser = argparse.ArgumentParser(
        prog="sam2prune",
        description="Token-pruned SAM 2 video object segmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            "sam2prune segment path/to/frames --point 320,240 --out masks/ --checkpoint sam2.1_hiera_tiny.pt",
            "sam2prune COMMAND --help",
        ),
    )
    parser.add_argument("--version", action=_VersionAction, help="print the versions of sam2prune and sam2, and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log the resolved settings of the run (debug messages)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment = _command(
        commands,
        "segment",
        help="segment objects through a video into palette PNGs",
        description=(
            "Segment prompted objects through a video. Writes one indexed-palette PNG per frame into "
            "--out (DAVIS convention: 0 background, k = object id k; same size and name stem as the frame). "
            "Without VIDEO it runs on the embedded 24-frame bedroom clip with its default clicks. Each object is "
            "tracked forward from the first frame it is prompted on, then backward from it to frame 0."
        ),
        epilog=(
            "prompts file (--prompts) format:\n"
            '  {"objects": [{"obj_id": 1, "frame": 0, "points": [[x, y]], "labels": [1]},\n'
            '               {"obj_id": 2, "frame": 5, "box": [x0, y0, x1, y1]},\n'
            '               {"obj_id": 3, "frame": 8, "mask": "mask.png"}]}\n'
            "coordinates are pixels of the original frames; mask paths are relative to the JSON file."
        ),
        examples=(
            "sam2prune segment path/to/frames --point 320,240 --out masks/ --checkpoint sam2.1_hiera_tiny.pt --overlay masks.mp4",
            "sam2prune segment --out out/bedroom --random-weights    # the embedded clip, random weights",
        ),
    )
    segment.add_argument(
        "video",
        nargs="?",
        type=Path,
        metavar="VIDEO",
        help="folder of JPEG/PNG frames (natural sort of names) or a video file (mp4, mov, avi, mkv, webm)",
    )
    segment.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder for the PNGs (created; replaced as a whole)"
    )
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
    segment.add_argument(
        "--fps",
        type=float,
        metavar="FPS",
        help="frame rate of the --overlay video (default: the video file's own; 10 for a folder of frames)",
    )
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

    bench = _command(
        commands,
        "bench",
        help="measure speed and memory, pruned vs unpruned",
        description=(
            "In one process, on the same frames, with the same weights and one click on frame 0: track with "
            "unpruned SAM 2 and with the pruned predictor at each --retention. Reports the median ms per "
            "steady-state frame (frames >= 8, once the memory bank is full), per-component medians, memory-bank "
            "bytes per tracked frame, peak RSS (and peak CUDA memory on a GPU) and the speedup. Without VIDEO it "
            "uses the embedded clip. Without --checkpoint, weights are random: timings are real, masks are not."
        ),
        examples=("sam2prune bench --scorer prior --retention 1.0 0.3 --json bench.json --plot bench.png",),
    )
    bench.add_argument("video", nargs="?", type=Path, metavar="VIDEO", help="folder of frames or a video file")
    bench.add_argument("--frames", type=int, default=16, metavar="N", help="number of frames to track, > 8 (default: %(default)s)")
    bench.add_argument(
        "--point",
        metavar="X,Y",
        help="the click on frame 0 (default: the embedded clip's first default click, or the frame centre)",
    )
    bench.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's, i.e. the cores)")
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
    _add_model_options(bench, results=False)
    _add_pruning_options(bench, retention_list=True, multi_mc=True)
    _add_auto_text_options(bench)
    bench.set_defaults(handler=cmd_bench)

    score = _command(
        commands,
        "score",
        help="J&F of a results folder against DAVIS-layout ground truth",
        description=(
            "Semi-supervised DAVIS 2017 scoring, reproducing the official evaluation: J (IoU) and F (boundary "
            "F-measure) per object and frame, first and last frames excluded, objects missing from the results "
            "count as empty. Writes global_results-<set>.csv and per-sequence_results-<set>.csv (as the official "
            "tool; J&F as a fraction) and summary.json (full precision). Works for any method's palette-PNG results."
        ),
        examples=(
            "sam2prune score --gt-root DAVIS --results runs/davis_r0.3/masks --out scores/",
            "sam2prune score --gt-root DAVIS --results runs/two/masks --sequences bike-packing blackswan",
        ),
    )
    score.add_argument("--gt-root", type=Path, required=True, metavar="ROOT", help="DAVIS layout: ROOT/Annotations/480p/<seq>/*.png")
    score.add_argument("--results", type=Path, required=True, metavar="DIR", help="results: DIR/<seq>/<frame>.png")
    score.add_argument(
        "--set",
        default="val",
        help="ROOT/ImageSets/2017/<set>.txt lists the sequences; also names the CSV files (default: %(default)s)",
    )
    score.add_argument(
        "--sequences", nargs="+", metavar="NAME", help="score only these sequences (e.g. those of an `eval --limit` run)"
    )
    score.add_argument("--out", type=Path, metavar="DIR", help="where the CSV files go, created if needed (default: the results folder)")
    score.set_defaults(handler=cmd_score)

    evaluate = _command(
        commands,
        "eval",
        help="run the interactive protocol on a dataset and score it",
        description=(
            "Protocol: one positive click per object on the first frame it appears on, at the maximum of the "
            "distance transform of its mask; tracking (each object from the frame it is prompted on); then, while "
            "some frame's J&F for an object is below --refine-below, up to --clicks-per-round corrective clicks on "
            "the worst frame (positive in the largest false-negative region, negative in the largest false-positive "
            "region, at their distance-transform maxima) and tracking again from it, at most --max-rounds rounds per "
            "sequence. Writes masks/<seq>/*.png, sequences/<seq>.json, the official CSVs and report.json into --out. "
            "An interrupted run resumes where it stopped (same --out, same settings). DAVIS is scored exactly as the "
            "official tool; other datasets per object over the annotated frames after its prompt frame.\n\n"
            "Dataset layouts:\n"
            + datasets_module.__doc__.split("ROOT is what ``--root`` points to):", 1)[1].replace("``", "")
        ),
        examples=(
            "sam2prune eval --dataset davis --root DAVIS --retention 0.3 --checkpoint sam2.1_hiera_tiny.pt --out runs/davis_r0.3",
        ),
    )
    _add_eval_options(evaluate)
    evaluate.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder (resumed if it holds this run)")
    evaluate.add_argument("--overwrite", action="store_true", help="start over in --out (deletes the run there)")
    evaluate.add_argument(
        "--method",
        choices=("pruned", "sam2"),
        default="pruned",
        help="pruned = token-pruned predictor; sam2 = the unpruned official predictor (default: %(default)s)",
    )
    _add_model_options(evaluate)
    _add_pruning_options(evaluate)
    _add_auto_text_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    report = _command(
        commands,
        "report",
        help="Table-1-style markdown across evaluation runs",
        description=(
            "Reads report.json of each run folder written by `sam2prune eval` or `sweep` and prints one markdown "
            "table: per dataset and method J, F, J&F (fractions, as the official CSVs), frames per second, peak "
            "memory, memory-bank KiB per frame, kept-token fraction, refinement rounds and clicks; then J&F by "
            "method and dataset."
        ),
        examples=("sam2prune report runs/davis_sam2 runs/davis_r0.3 --out table1.md --plot tradeoff.png",),
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="folders written by `sam2prune eval`")
    report.add_argument("--out", type=Path, metavar="FILE.md", help="also write the table here")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="J&F and FPS against retention")
    report.set_defaults(handler=cmd_report)

    sweep = _command(
        commands,
        "sweep",
        help="evaluate a grid of retentions and scorers (plus unpruned SAM 2) into one table",
        description=(
            "Runs `eval` for unpruned SAM 2 and every --scorers x --signal-sets x --texts x --mc-passes x "
            "--retention combination, with the same weights, into --out/<label>/ (each resumable), then writes "
            "--out/report.md."
        ),
        examples=(
            "sam2prune sweep --dataset davis --root DAVIS --checkpoint sam2.1_hiera_tiny.pt --retention 1.0 0.5 0.3 0.1 --out runs/sweep --plot",
        ),
    )
    _add_eval_options(sweep)
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder of the runs, one subfolder each, and report.md")
    sweep.add_argument("--overwrite", action="store_true", help="start every run over")
    sweep.add_argument(
        "--scorers", nargs="+", choices=SCORERS, metavar="SCORER", help=f"scorers to compare: {', '.join(SCORERS)} (default: {_default('scorer')})"
    )
    sweep.add_argument("--no-baseline", action="store_true", help="skip unpruned SAM 2")
    sweep.add_argument("--plot", action="store_true", help="also write --out/tradeoff.png")
    sweep.add_argument("--signal-sets", type=_signal_list, nargs="+", metavar="LIST", help="router signal subsets to compare, e.g. text text,uncertainty")
    sweep.add_argument("--texts", nargs="+", metavar="TEXT", help="several phrasings of the target (e.g. accurate, vague, human); one run each, compared")
    _add_model_options(sweep)
    _add_pruning_options(sweep, retention_list=True, multi_mc=True)
    sweep.set_defaults(handler=cmd_sweep)

    prompt = _command(
        commands,
        "prompt",
        help="describe the prompted object in a few words (region -> caption -> phrase)",
        description=(
            "Region of interest (the --box; else the box of SAM 2's mask for the --point click or of the --mask; "
            "with no prompt, the top-objectness proposal of a Faster R-CNN region proposal network from "
            "--detector-weights), cropped with a margin, captioned by --captioner, distilled by --refiner to at most "
            "--max-words words. Prints the region, the caption, each stage's time and the phrase. "
            "With --caption TEXT only the refiner runs, and the phrase is the last line."
        ),
        examples=(
            "sam2prune prompt path/to/frames --box 100,80,400,360 --captioner path/to/blip-image-captioning-base",
            'sam2prune prompt --caption "a small fluffy dog with brown fur is being held by a person"',
        ),
    )
    prompt.add_argument("video", nargs="?", type=Path, metavar="VIDEO", help="folder of frames or a video file (default: the embedded clip)")
    prompt.add_argument("--caption", metavar="TEXT", help="refine this caption only (no video, no captioner)")
    prompt.add_argument("--point", action="append", default=[], metavar="X,Y", help="positive click on the object; the region is the box of SAM 2's mask for it (repeatable)")
    prompt.add_argument("--neg", action="append", default=[], metavar="X,Y", help="negative click, with --point (repeatable)")
    prompt.add_argument("--box", metavar="X0,Y0,X1,Y1", help="the region itself, in pixels")
    prompt.add_argument("--mask", type=Path, metavar="PNG", help="object mask; the region is its box")
    prompt.add_argument("--frame", type=_frame_index, metavar="N", help="frame of the prompt (default: 0)")
    prompt.add_argument("--detector-weights", type=Path, metavar="FILE", help="torchvision fasterrcnn_resnet50_fpn weights, for the no-prompt case")
    _add_auto_text_options(prompt, switch=False)
    _add_model_options(prompt)
    prompt.set_defaults(handler=cmd_prompt, auto_text=True)

    fit = _command(
        commands,
        "fit-aligner",
        help="fit the token-to-text projection for the text signal",
        description=(
            "Closed-form ridge least squares from SAM 2 token features to the text space: tokens inside each "
            "labelled object are mapped to its phrase's embedding, background tokens to that of 'background'. "
            'LABELS.json maps "<sequence>/<object id>" to a phrase.'
        ),
        examples=("sam2prune fit-aligner --root DAVIS --labels labels.json --out aligner.pt --checkpoint sam2.1_hiera_tiny.pt",),
    )
    _add_data_options(fit, default_dataset="davis")
    fit.add_argument("--labels", type=Path, required=True, metavar="LABELS.json", help='phrase of each object: {"<sequence>/<object id>": "a black swan", ...}')
    fit.add_argument("--out", type=Path, required=True, metavar="ALIGNER.pt", help="where the aligner is written (pass it to --aligner)")
    fit.add_argument("--text-encoder", default="minilm", help="minilm, clip:<folder or hub id>, open_clip:<arch>:<file> (default: %(default)s)")
    fit.add_argument("--ridge", type=float, default=1.0, help="L2 penalty (default: %(default)s)")
    fit.add_argument("--frame-step", type=int, default=1, metavar="N", help="use every Nth annotated frame (default: %(default)s)")
    _add_model_options(fit)
    fit.set_defaults(handler=cmd_fit_aligner)

    train = _command(
        commands,
        "train-router",
        help="train the paper/learned router on a dataset with masks",
        description=(
            "Trains the router MLP: per token, the target is the fraction of its patch inside the dilated ground-truth "
            "mask; signals as the tracker computes them (prior from the previous annotated frame). Frames whose index "
            "is divisible by --holdout-every are held out; reports their recall of object tokens at --retention."
        ),
        examples=(
            "sam2prune train-router --root DAVIS --labels labels.json --aligner aligner.pt --out router.pt --checkpoint sam2.1_hiera_tiny.pt",
        ),
    )
    _add_data_options(train, default_dataset="davis")
    train.add_argument("--out", type=Path, required=True, metavar="ROUTER.pt", help="where the router weights are written (pass them to --router-weights)")
    train.add_argument("--router", choices=("learned", "paper"), default="learned", help="which MLP: paper = the source paper's inputs; learned = all signals (default: %(default)s)")
    train.add_argument("--labels", type=Path, metavar="LABELS.json", help="object phrases, for the text signal")
    train.add_argument("--aligner", metavar="ALIGNER.pt", help="token-to-text projection, for the text signal")
    train.add_argument("--signals", type=_signal_list, metavar="LIST", help="default: paper visual,uncertainty(,text); learned visual,uncertainty,prior(,text)")
    train.add_argument("--epochs", type=int, default=20, help="passes over the examples (default: %(default)s)")
    train.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR", help="Adam learning rate (default: %(default)s)")
    train.add_argument("--loss", choices=("bce", "ranking"), default="bce", help="bce on the token targets, or a pairwise ranking loss (default: %(default)s)")
    train.add_argument("--retention", type=float, default=_PRUNING_DEFAULTS.retention, metavar="R", help="retention of the held-out recall (default: %(default)s)")
    train.add_argument("--holdout-every", type=int, default=5, metavar="N", help="hold out frames whose index is divisible by N (default: %(default)s)")
    train.add_argument("--uncertainty", choices=UNCERTAINTY_MODES, default=_PRUNING_DEFAULTS.uncertainty, help="uncertainty signal mode (default: %(default)s)")
    train.add_argument("--mc-passes", type=int, default=_PRUNING_DEFAULTS.mc_passes, metavar="T", help="dropout samples for --uncertainty mc (default: %(default)s)")
    train.add_argument("--mc-dropout-p", type=float, default=_PRUNING_DEFAULTS.mc_dropout_p, metavar="P", help="dropout rate of the uncertainty signal (default: %(default)s)")
    train.add_argument("--uncertainty-blocks", type=_int_list, default=_PRUNING_DEFAULTS.uncertainty_blocks, metavar="LIST", help="Hiera blocks with dropout (default: 3,4,5)")
    train.add_argument("--prior-dilation", type=int, default=_PRUNING_DEFAULTS.prior_dilation, metavar="TOKENS", help="dilation of the prior mask in tokens (default: %(default)s)")
    train.add_argument("--seed", type=int, default=_PRUNING_DEFAULTS.seed, help="seed of initialisation, shuffling and dropout (default: %(default)s)")
    _add_model_options(train)
    train.set_defaults(handler=cmd_train_router)

    models = _command(
        commands,
        "models",
        help="list the SAM 2 models, their checkpoint files and which are in ./checkpoints/",
        description=(
            "The official SAM 2 and SAM 2.1 models --model accepts: checkpoint file name, input size, and whether "
            "the checkpoint is in ./checkpoints/ (where sam2's download script puts it; found there, it is used "
            "without --checkpoint)."
        ),
        examples=("sam2prune models",),
    )
    models.set_defaults(handler=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # our messages only: third-party libraries keep their own (quiet) logging defaults
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sam2prune: %(message)s"))
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    log.debug("%s", " ".join(["sam2prune", *argv]))
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
