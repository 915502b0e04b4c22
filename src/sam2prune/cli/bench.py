"""``sam2prune bench``: speed and memory of pruned against unpruned SAM 2, in one process."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.cli.common import (
    PRUNING_DEFAULTS,
    RETENTION_GRID,
    AutoTextOptions,
    Command,
    GpuOptions,
    ModelOptions,
    add_auto_text_options,
    add_gpu_options,
    add_model_options,
    add_overwrite_option,
    add_pruning_options,
    add_threads_option,
    auto_text_hook,
    auto_text_options,
    auto_text_pipeline,
    build,
    check_gpu_options,
    check_threads,
    default_of,
    embedded_clip,
    gpu_options,
    log,
    model_options,
    path_argument,
    pruning_configs,
    refuse_auto_text_options_without_switch,
    resolve_device,
    resolve_weights,
)
from sam2prune.config import PruningConfig
from sam2prune.errors import InputError
from sam2prune.models import COMPILE_MODES, model_input_size
from sam2prune.wording import counted, no_effect

if TYPE_CHECKING:
    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import ObjectPrompt


def check_result_files(
    json_path: Path | None,
    plot_path: Path | None,
    *,
    video: Path | None,
    inputs: Sequence[tuple[str, Path]] = (),
    overwrite: bool = False,
) -> None:
    """Raises InputError unless ``--json`` and ``--plot`` can be written without harm: two
    different files, neither an input (the video, inside a folder of frames, ``inputs``: e.g. a
    prompts file and the masks it names), and not existing yet unless ``overwrite``; the plot
    named .png."""
    from sam2prune.fsutil import check_output_files

    read = [("VIDEO", video if video is not None else embedded_clip()), *inputs]
    check_output_files([("--json", json_path), ("--plot", plot_path)], inputs=read, overwrite=overwrite)
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise InputError(f"--plot {plot_path}: the plot is a PNG image; name it FILE.png")
    if plot_path is not None:
        from sam2prune.evaluation.report import pyplot

        pyplot()  # matplotlib is there (the plot is drawn after the benchmark)


def bench(
    *,
    pruning: Sequence[PruningConfig],
    video: Path | None = None,
    frames: int = 16,
    point: tuple[float, float] | None = None,
    objects: int = 1,
    prompts: Path | None = None,
    threads: int | None = None,
    warmup: int | None = None,
    bf16: bool = False,
    profile_frames: int | None = None,
    compile_mode: str | None = None,
    compile_timeout: float | None = None,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    overwrite: bool = False,
    model: ModelOptions = ModelOptions(),
    auto_text: AutoTextOptions = AutoTextOptions(),
    lengths: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    static_step: str = "off",
) -> dict[str, Any]:
    """Benchmark sam2's own predictors, sam2prune's unpruned one and one pruned predictor per
    config on the same frames, with the same weights and prompts; print the table and return
    the results (``sam2prune.bench`` says how each figure is measured).

    With ``lengths``: memory against video length instead (``bench_lengths``).

    Args:
        pruning: one pruned run each (``auto_text`` and the scorer as in the first).
        video: a folder of frames or a video file; None: the embedded clip.
        frames: frames tracked, more than ``bench.STEADY_FROM_FRAME``; a folder of fewer frames
            is played forwards and backwards until there are as many.
        point: the click ``(x, y)`` of one object on frame 0; None: the embedded clip's first
            default click, or the frame centre.
        objects: objects tracked, one click each on frame 0, spread over the frame on a grid
            (one object: ``point``).
        prompts: a prompts JSON file as ``segment --prompts`` takes (instead of clicks).
        threads: torch CPU threads; None: torch's.
        warmup: frames each predictor tracks untimed first; None: ``BenchSettings``' default.
        bf16: run every predictor under bfloat16 autocast (CUDA only).
        lengths: measure memory against these video lengths instead (the clip looped).
        methods: with ``lengths``, the methods measured (``memory_bench.METHODS``; None: all).
        profile_frames: steady-state frames profiled per predictor; None: ``BenchSettings``'.
        compile_mode: torch.compile mode of sam2's vos_optimized predictor, or "none"; None:
            ``BenchSettings``' default.
        compile_timeout: seconds after which measuring that predictor is given up; None: none.
        json_path, plot_path: also write the results as JSON (after each predictor, too), and
            plot them.
        overwrite: replace ``json_path`` and ``plot_path`` when they exist (else refused).
        static_step: how the pruned predictors run steady-state frames
            (``PrunedSAM2VideoPredictor.set_static_step``: off, buffers or graphs).
    """
    if lengths is not None:
        if static_step != "off":
            raise InputError("--static-step is measured by the speed benchmark; it has no effect with --lengths")
        return bench_lengths(
            lengths=lengths,
            methods=methods,
            pruning=pruning[0],
            video=video,
            point=point,
            threads=threads,
            bf16=bf16,
            json_path=json_path,
            plot_path=plot_path,
            overwrite=overwrite,
            model=model,
        )
    if methods is not None:
        raise InputError("--methods chooses what --lengths measures; it has no effect without --lengths")
    import torch

    from sam2prune.bench import STEADY_FROM_FRAME, BenchSettings, markdown_table, plot, run_benchmark
    from sam2prune.data.video import VideoSource
    from sam2prune.fsutil import atomic_write_json
    from sam2prune.progress import sam2_progress_in_lines
    from sam2prune.prompts import check_prompts, load_prompts_file, prompts_file_inputs

    check_threads(threads)
    check_gpu_options(GpuOptions(bf16=bf16, static_step=static_step), resolve_device(model.device))
    if frames <= STEADY_FROM_FRAME:
        raise InputError(
            f"--frames {frames}: need more than {STEADY_FROM_FRAME} frames to measure the steady state "
            f"(frames >= {STEADY_FROM_FRAME}, once SAM 2's 7-frame memory bank is full)"
        )
    if warmup is not None and warmup < 1:
        raise InputError(f"--warmup must be >= 1 frame, got {warmup}")
    if profile_frames is not None and profile_frames < 0:
        raise InputError(f"--profile-frames must be >= 0, got {profile_frames}")
    if compile_timeout is not None and compile_timeout <= 0:
        raise InputError(f"--compile-timeout must be > 0 seconds, got {compile_timeout:g}")
    if not 1 <= objects <= 254:
        raise InputError(f"--objects must be in 1..254, got {objects}")
    if prompts is not None and (point is not None or objects != 1):
        raise InputError("--prompts gives every object's prompts: it cannot be combined with --point or --objects")
    if point is not None and objects != 1:
        raise InputError("--point is the click of one object: with --objects N the clicks are spread over frame 0")
    file_prompts, prompt_inputs = None, []
    if prompts is not None:  # read once: checked against the outputs, then tracked
        file_prompts = load_prompts_file(prompts)
        prompt_inputs = prompts_file_inputs(prompts, file_prompts)
    check_result_files(json_path, plot_path, video=video, inputs=prompt_inputs, overwrite=overwrite)
    weights = resolve_weights(model, required=False)
    source = VideoSource.open(video if video is not None else embedded_clip())
    clip_frames = len(source)
    source = source.looped(frames)
    if file_prompts is not None:
        object_prompts = file_prompts
    else:
        object_prompts = spread_clicks(source, objects, point=point, default_click=video is None)
    beyond = [p for p in object_prompts if p.frame >= frames]
    if beyond:
        needed = beyond[0].frame + 9  # and a steady state after it
        advice = (
            f"pass --frames {needed} or more"
            if needed <= clip_frames or not source.is_video_file
            else f"the video has {clip_frames} frames: prompt an earlier frame"
        )
        raise InputError(
            f"{beyond[0].source}: object {beyond[0].obj_id} is prompted on frame {beyond[0].frame}, but --frames "
            f"{frames} tracks frames 0..{frames - 1}: {advice}"
        )
    check_prompts(object_prompts, num_frames=len(source), width=source.width, height=source.height)
    on_prompted_for = None
    if pruning[0].auto_text:
        if pruning[0].scorer != "router":
            raise InputError("--auto-text drives the router's text signal: use --scorer router")
        pipeline = auto_text_pipeline(auto_text, device=model.device, command="bench")

        def on_prompted_for(frames):
            return auto_text_hook(pipeline, frames, object_prompts)

    from sam2prune.models import with_pruning

    baseline = build(model, weights)  # unpruned: each pruned setting is switched on it
    log.debug("pruning settings measured: %s", "; ".join(map(str, pruning)))

    def build_pruned(config):
        if config is None:
            return baseline
        pruned = with_pruning(baseline, config)
        pruned.set_static_step(static_step)
        return pruned

    settings = BenchSettings(
        model=model.model,
        image_size=baseline.image_size,
        frames=len(source),
        threads=threads or torch.get_num_threads(),
        device=resolve_device(model.device),
        random_weights=weights.checkpoint is None,
        pruning=list(pruning),
        bf16_autocast=bf16,
        warmup_frames=warmup,
        profile_frames=profile_frames,
        compile_mode=compile_mode,
        compile_timeout_s=compile_timeout,
        static_step=static_step,
    )
    with sam2_progress_in_lines():
        result = run_benchmark(
            settings,
            source,
            object_prompts,
            build=build_pruned,
            progress=log.info,
            on_prompted_for=on_prompted_for,
            checkpoint=(lambda partial: _save_partial(partial, json_path, plot_path))
            if json_path is not None
            else None,
            clip_frames=clip_frames,
        )
    result["complete"] = True
    print(markdown_table(result))
    looped = f", the {clip_frames}-frame clip played back and forth" if clip_frames < result["frames"] else ""
    print(
        f"\n{result['model']} at {result['image_size']} px, {result['frames']} frames{looped} (steady state: frames >= "
        f"{result['steady_from_frame']}), {counted(result['objects'], 'object')}, {result['device']}, "
        f"{result['precision']}, {counted(result['threads'], 'thread')}, scorer {pruning[0].scorer}, conditioning frames "
        f"{'pruned' if pruning[0].prune_conditioning_frames else 'dense'}"
        + (", RANDOM weights" if result["random_weights"] else "")
    )
    steady = result["frames"] - result["steady_from_frame"]
    if steady < 5:  # a median of one or two frames is noise on a busy machine
        log.warning(
            "ms/frame is the median of %s only; pass --frames %d or more for a steadier figure",
            counted(steady, "steady-state frame"),
            result["steady_from_frame"] + 5,
        )
    if json_path is not None:
        atomic_write_json(json_path, result)
        print(f"results: {json_path}")
    if plot_path is not None:
        plot(plot_path, result)
        print(f"plot: {plot_path}")
    return result


def _save_partial(partial: dict[str, Any], json_path: Path, plot_path: Path | None) -> None:
    """What a benchmark measured so far, marked incomplete; an earlier plot, which no longer
    matches it, removed (the plot is drawn once the benchmark completes)."""
    from sam2prune.fsutil import atomic_write_json

    atomic_write_json(json_path, {**partial, "complete": False})
    if plot_path is not None:
        plot_path.unlink(missing_ok=True)


def bench_lengths(
    *,
    lengths: Sequence[int],
    methods: Sequence[str] | None = None,
    pruning: PruningConfig = PruningConfig(),
    video: Path | None = None,
    point: tuple[float, float] | None = None,
    threads: int | None = None,
    bf16: bool = False,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    overwrite: bool = False,
    model: ModelOptions = ModelOptions(),
) -> dict[str, Any]:
    """Peak memory and steady ms/frame against video length: official SAM 2 (``sam2``, and
    ``sam2-offload`` with its frames and state offloaded to the CPU) and the pruned predictor
    with ``pruning`` (``pruned-unbounded``, ``pruned-bounded``), each length of the clip
    (looped) and each method in a fresh process, with the same weights and one click on
    frame 0. Prints the table and returns ``{"memory_vs_length": [{"method", "frames",
    "peak_rss_mib", "peak_cuda_mib", "ms_per_frame", ...}], ...}``.

    Args:
        lengths: the video lengths in frames, each > 8.
        methods: a subset of ``memory_bench.METHODS``; None: all.
        video: a folder of JPEG frames to loop; None: the embedded clip.
    """
    import torch

    from sam2prune.bench import _device_name, _versions
    from sam2prune.fsutil import atomic_write_json
    from sam2prune.memory_bench import (
        METHOD_HELP,
        METHODS,
        STEADY_FROM_FRAME,
        LengthResult,
        check_loopable,
        markdown_table,
        plot,
        run_lengths,
    )
    from sam2prune.prompts import load_prompts_file

    check_threads(threads)
    check_result_files(json_path, plot_path, video=video, overwrite=overwrite)
    device = resolve_device(model.device)
    check_gpu_options(GpuOptions(bf16=bf16), device)
    weights = resolve_weights(model, required=False)
    clip = video if video is not None else embedded_clip()
    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import CLICK_OPTIONS, ObjectPrompt, check_prompts

    source = VideoSource.open(clip)
    check_loopable(source)  # before the model's weights are made for the runs
    if point is None:
        if video is None:
            point = load_prompts_file(embedded_clip() / "prompts.json")[0].points[0]
        else:
            point = (source.width / 2, source.height / 2)
    click = ObjectPrompt(obj_id=1, frame=0, points=(point,), labels=(1,), source=CLICK_OPTIONS)
    check_prompts([click], num_frames=len(source), width=source.width, height=source.height)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    image_size = model_input_size(model.model, model.image_size)

    def report(results: list[LengthResult], *, complete: bool) -> dict[str, Any]:
        return {
            "memory_vs_length": [asdict(r) for r in results],
            "complete": complete,  # False: stopped early, some (method, length) runs missing
            "point": list(point),
            "methods": {m: METHOD_HELP[m] for m in METHOD_HELP if any(r.method == m for r in results)},
            "model": model.model,
            "image_size": image_size,
            "random_weights": weights.checkpoint is None,
            "clip": str(clip),
            "pruning": asdict(pruning),
            "device": _device_name(torch.device(device)),
            "threads": threads,
            "precision": "bf16 autocast" if bf16 else "float32",
            "versions": _versions(),
        }

    # after every run: a long benchmark stopped early keeps what it measured, marked incomplete
    # (and an earlier plot, which no longer matches it, goes: the plot is drawn at the end)
    def save(results: list[LengthResult]) -> None:
        if json_path is not None:
            atomic_write_json(json_path, report(results, complete=False))
        if plot_path is not None:
            plot_path.unlink(missing_ok=True)

    results = run_lengths(
        lengths=lengths,
        methods=list(methods) if methods is not None else list(METHODS),
        clip=clip,
        model=model.model,
        checkpoint=weights.checkpoint,
        image_size=model.image_size,
        device=device,
        threads=threads,
        pruning=asdict(pruning),
        point=(point[0], point[1]),
        bf16=bf16,
        progress=log.info,
        on_result=save,
    )
    shortest = min(lengths) - STEADY_FROM_FRAME
    if shortest < 5:  # a median of one or two frames is noise on a busy machine
        log.warning(
            "ms/frame at %d frames is the median of %s only; lengths of %d or more give steadier figures",
            min(lengths),
            counted(shortest, "steady-state frame"),
            STEADY_FROM_FRAME + 5,
        )
    result = report(results, complete=True)
    if json_path is not None:
        atomic_write_json(json_path, result)
    print(markdown_table(results))
    print(
        f"\n{result['model']} at {image_size} px, {result['device']}, {result['precision']}, {counted(threads, 'thread')}, one "
        f"object; pruned: retention {pruning.retention:g}, scorer {pruning.scorer}; each run in a fresh process"
        + (", RANDOM weights" if result["random_weights"] else "")
    )
    if json_path is not None:
        print(f"results: {json_path}")
    if plot_path is not None:
        title = (
            f"{result['model']} at {image_size} px, {result['device']}, one object; pruned r={pruning.retention:g}"
            + (", RANDOM weights" if result["random_weights"] else "")
        )
        plot(plot_path, results, title=title)
        print(f"plot: {plot_path}")
    return result


def spread_clicks(
    source: VideoSource, objects: int, *, point: tuple[float, float] | None, default_click: bool
) -> list[ObjectPrompt]:
    """One positive click per object on frame 0. One object: ``point``, else the embedded clip's
    first default click (``default_click``), else the frame centre. Several: the centres of the
    cells of a near-square grid over the frame, row by row (``objects`` cells used)."""
    from sam2prune.prompts import ObjectPrompt, load_prompts_file

    if objects == 1:
        if point is not None:
            x, y = point
        elif default_click:
            x, y = load_prompts_file(embedded_clip() / "prompts.json")[0].points[0]
        else:
            x, y = source.width / 2, source.height / 2
        return [ObjectPrompt(obj_id=1, frame=0, points=((x, y),), labels=(1,), source="--point")]
    columns = math.ceil(math.sqrt(objects))
    rows = math.ceil(objects / columns)
    return [
        ObjectPrompt(
            obj_id=index + 1,
            frame=0,
            points=(
                ((index % columns + 0.5) * source.width / columns, (index // columns + 0.5) * source.height / rows),
            ),
            labels=(1,),
            source="--objects",
        )
        for index in range(objects)
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "video", nargs="?", type=path_argument, metavar="VIDEO", help="folder of frames or a video file"
    )
    parser.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="length of the video benchmarked, from frame 0, > 8; tracking starts on the first prompted frame "
        f"(default: {default_of(bench, 'frames')})",
    )
    parser.add_argument(
        "--point",
        metavar="X,Y",
        help="the click on frame 0 (default: the embedded clip's first default click, or the frame centre)",
    )
    parser.add_argument(
        "--objects",
        type=int,
        default=default_of(bench, "objects"),
        metavar="N",
        help="objects to track, one click each on frame 0, spread over the frame (default: %(default)s)",
    )
    parser.add_argument(
        "--prompts",
        type=path_argument,
        metavar="FILE.json",
        help="the objects' prompts as `segment --prompts` takes them (instead of --point/--objects)",
    )
    add_threads_option(parser)
    parser.add_argument(
        "--warmup",
        type=int,
        metavar="FRAMES",
        help="frames each predictor tracks untimed first (default: 3 on the CPU, the whole clip on CUDA, where "
        "kernels are planned per new tensor shape and the memory bank changes shape until it is full)",
    )
    parser.add_argument(
        "--profile-frames",
        type=int,
        metavar="N",
        help="steady-state frames each predictor is profiled on (torch.profiler: kernels and GPU time per frame, "
        "per-component GPU time); 0: no profiled run (default: 5 on CUDA, 0 on the CPU)",
    )
    parser.add_argument(
        "--compile-mode",
        choices=("none", *COMPILE_MODES),
        help="torch.compile mode for sam2's vos_optimized predictor (sam2 compiles with max-autotune, which "
        "autotunes for many minutes); none: do not measure it (default: reduce-overhead on CUDA, none on the CPU)",
    )
    parser.add_argument(
        "--compile-timeout",
        type=float,
        metavar="SECONDS",
        help="give sam2's compiled predictor up (recorded as an error, the other figures kept) when building, "
        "compiling, warming it up and timing it take longer (default: no limit)",
    )
    parser.add_argument(
        "--json", type=path_argument, metavar="FILE", help="write the results as JSON (also after each predictor)"
    )
    parser.add_argument(
        "--plot",
        type=path_argument,
        metavar="FILE.png",
        help="plot ms/frame and bank size vs retention (memory vs frames)",
    )
    add_overwrite_option(parser, "--json or --plot file")
    lengths = parser.add_argument_group("memory against video length")
    lengths.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        metavar="N",
        help="instead: peak RSS (and peak CUDA memory) and steady ms/frame at each video length, the clip (a folder "
        "of JPEG frames, as official SAM 2 reads them) looped to N frames, each method in a fresh process (one "
        "--retention); method by method, in the --methods "
        "order, each at the lengths in this order; --json is rewritten after every run",
    )
    lengths.add_argument(
        "--methods",
        nargs="+",
        metavar="M",
        help="with --lengths: some of sam2, sam2-offload, pruned-unbounded, pruned-bounded (default: all)",
    )
    add_model_options(parser, results=False, threads=False)
    add_gpu_options(parser, subject="every predictor")
    add_pruning_options(parser, retention_list=True, multi_mc=True)
    add_auto_text_options(parser)


def handle(args: argparse.Namespace) -> int:
    from sam2prune.prompts import parse_numbers

    refuse_auto_text_options_without_switch(args)
    if args.lengths is not None:
        given = [flag for flag, value in (("--frames", args.frames), ("--warmup", args.warmup)) if value is not None]
        given += ["--auto-text"] if args.auto_text else []
        if given:
            raise InputError(f"{', '.join(given)} has no effect with --lengths (each run tracks the whole looped clip)")
        unused = [
            flag
            for flag, given_here in (
                ("--objects", args.objects != default_of(bench, "objects")),
                ("--prompts", args.prompts is not None),
                ("--profile-frames", args.profile_frames is not None),
                ("--compile-mode", args.compile_mode is not None),
                ("--compile-timeout", args.compile_timeout is not None),
            )
            if given_here
        ]
        if unused:
            raise InputError(
                f"{no_effect(unused)} with --lengths (each run "
                "tracks one object, clicked on frame 0 with --point, unprofiled, without sam2's compiled predictor)"
            )
        if args.retention is not None and len(args.retention) > 1:
            raise InputError("--lengths measures one pruned predictor: give one --retention")
    for option, values in (("--retention", args.retention), ("--lengths", args.lengths), ("--methods", args.methods)):
        repeated = sorted({str(v) for v in values or () if list(values).count(v) > 1})
        if repeated:
            raise InputError(f"{option}: {', '.join(repeated)} given more than once (each would be measured again)")
    default_retentions = [PRUNING_DEFAULTS.retention] if args.lengths is not None else list(RETENTION_GRID)
    configs = pruning_configs(args, retentions=args.retention or default_retentions)
    bench(
        pruning=configs,
        video=args.video,
        frames=args.frames if args.frames is not None else default_of(bench, "frames"),
        point=parse_numbers(args.point, 2, argument="--point") if args.point is not None else None,
        objects=args.objects,
        prompts=args.prompts,
        threads=args.threads,
        warmup=args.warmup,
        bf16=gpu_options(args).bf16,
        profile_frames=args.profile_frames,
        compile_mode=args.compile_mode,
        compile_timeout=args.compile_timeout,
        json_path=args.json,
        plot_path=args.plot,
        overwrite=args.overwrite,
        model=model_options(args),
        auto_text=auto_text_options(args),
        lengths=args.lengths,
        methods=args.methods,
        static_step=gpu_options(args).static_step,
    )
    return 0


COMMAND = Command(
    run=bench,
    add_arguments=add_arguments,
    handle=handle,
    help="measure speed and memory, pruned vs unpruned",
    description=(
        "In one process, on the same frames, with the same weights and prompts: track with sam2's own "
        "SAM2VideoPredictor (the reference of every speedup), sam2's vos_optimized (torch.compile) predictor "
        "(CUDA), sam2prune's unpruned predictor and the pruned predictor at each --retention. ms/frame is the "
        "median over steady-state frames (8 frames or more after the last prompted one, once the memory bank is full; tracking starts at the first prompted frame) of a run with nothing "
        "installed (one CUDA sync per frame); per-component times come from a separate run (wall clock on the "
        "CPU, GPU kernel time from torch.profiler on CUDA), kernels per frame from a profiled run. Also: "
        "memory-bank bytes per tracked frame, peak RSS (peak CUDA memory on a GPU). Without VIDEO it uses the "
        "embedded clip. Without --checkpoint, weights are random: timings are real, masks are not. With "
        "--lengths: memory and speed against video length instead (official SAM 2, with and without offloading, "
        "and the pruned predictor with and without bounded memory), each run in a fresh process."
    ),
    examples=(
        "sam2prune bench --scorer prior --retention 1.0 0.3 --json bench.json --plot bench.png",
        "sam2prune bench --device cuda --bf16 --frames 48 --objects 8 --scorer prior --retention 1.0 0.3",
        "sam2prune bench --lengths 500 5000 --image-size 256 --json lengths.json --plot lengths.png",
    ),
)
