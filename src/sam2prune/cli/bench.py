"""``sam2prune bench``: speed and memory of pruned against unpruned SAM 2, in one process."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sam2prune.cli.common import (
    RETENTION_GRID,
    AutoTextOptions,
    Command,
    ModelOptions,
    add_auto_text_options,
    add_model_options,
    add_pruning_options,
    auto_text_hook,
    auto_text_options,
    auto_text_pipeline,
    build,
    default_of,
    embedded_clip,
    log,
    model_options,
    pruning_configs,
    refuse_auto_text_options_without_switch,
    resolve_device,
    resolve_weights,
)
from sam2prune.config import PruningConfig
from sam2prune.errors import InputError


def bench(
    *,
    pruning: Sequence[PruningConfig],
    video: Path | None = None,
    frames: int = 16,
    point: tuple[float, float] | None = None,
    threads: int | None = None,
    warmup: int | None = None,
    bf16: bool = False,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    model: ModelOptions = ModelOptions(),
    auto_text: AutoTextOptions = AutoTextOptions(),
) -> dict[str, Any]:
    """Benchmark unpruned SAM 2 and one pruned predictor per config on the same frames, with
    the same weights and one click on frame 0; print the table and return the results.

    Args:
        pruning: one pruned run each (``auto_text`` and the scorer as in the first).
        video: a folder of frames or a video file; None: the embedded clip.
        frames: frames tracked, more than ``bench.STEADY_FROM_FRAME``.
        point: the click ``(x, y)``; None: the embedded clip's first default click, or the
            frame centre.
        threads: torch CPU threads; None: torch's.
        warmup: frames each predictor tracks untimed first; None: ``BenchSettings``' default.
        bf16: run every predictor under bfloat16 autocast (CUDA only).
        json_path, plot_path: also write the results as JSON, and plot them.
    """
    import torch

    from sam2prune.bench import STEADY_FROM_FRAME, BenchSettings, markdown_table, plot, run_benchmark
    from sam2prune.data.video import VideoSource
    from sam2prune.fsutil import atomic_write_json, check_output_file
    from sam2prune.prompts import ObjectPrompt, check_prompts, load_prompts_file

    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    if frames <= STEADY_FROM_FRAME:
        raise InputError(
            f"--frames {frames}: need more than {STEADY_FROM_FRAME} frames to measure the steady state "
            f"(frames >= {STEADY_FROM_FRAME}, once SAM 2's 7-frame memory bank is full)"
        )
    if warmup is not None and warmup < 1:
        raise InputError(f"--warmup must be >= 1 frame, got {warmup}")
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path is not None:
            check_output_file(path, option=option)
    weights = resolve_weights(model, required=False)
    source = VideoSource.open(video if video is not None else embedded_clip())
    if len(source) <= STEADY_FROM_FRAME:
        raise InputError(
            f"the video has {len(source)} frames: need more than {STEADY_FROM_FRAME} to measure the steady state"
        )
    source = source.head(min(frames, len(source)))
    if point is not None:
        x, y = point
    elif video is None:
        first = load_prompts_file(embedded_clip() / "prompts.json")[0]
        x, y = first.points[0]
    else:
        x, y = source.width / 2, source.height / 2
    prompts = [ObjectPrompt(obj_id=1, frame=0, points=((x, y),), labels=(1,), source="--point")]
    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)
    on_prompted_for = None
    if pruning[0].auto_text:
        if pruning[0].scorer != "router":
            raise InputError("--auto-text drives the router's text signal: use --scorer router")
        pipeline = auto_text_pipeline(auto_text, device=model.device, command="bench")

        def on_prompted_for(frames):
            return auto_text_hook(pipeline, frames, prompts)

    from sam2prune.models import with_pruning

    baseline = build(model, weights)

    def build_pruned(config):
        return baseline if config is None else with_pruning(baseline, config)

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
    )
    result = run_benchmark(
        settings, source, prompts, build=build_pruned, progress=log.info, on_prompted_for=on_prompted_for
    )
    print(markdown_table(result))
    print(
        f"\n{result['model']} at {result['image_size']} px, {result['frames']} frames (steady state: frames >= "
        f"{result['steady_from_frame']}), {result['device']}, {result['precision']}, {result['threads']} threads, scorer "
        f"{pruning[0].scorer}, conditioning frames {'pruned' if pruning[0].prune_conditioning_frames else 'dense'}"
        + (", RANDOM weights" if result["random_weights"] else "")
    )
    if json_path is not None:
        atomic_write_json(json_path, result)
        print(f"results: {json_path}")
    if plot_path is not None:
        plot(plot_path, result)
        print(f"plot: {plot_path}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", nargs="?", type=Path, metavar="VIDEO", help="folder of frames or a video file")
    parser.add_argument(
        "--frames",
        type=int,
        default=default_of(bench, "frames"),
        metavar="N",
        help="number of frames to track, > 8 (default: %(default)s)",
    )
    parser.add_argument(
        "--point",
        metavar="X,Y",
        help="the click on frame 0 (default: the embedded clip's first default click, or the frame centre)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's, i.e. the cores)")
    parser.add_argument(
        "--warmup",
        type=int,
        metavar="FRAMES",
        help="frames each predictor tracks untimed first (default: 3 on the CPU, the whole clip on CUDA, where "
        "kernels are planned per new tensor shape and the memory bank changes shape until it is full)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run every predictor under bfloat16 autocast, as SAM 2's GPU examples do (CUDA only; default: float32)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="plot ms/frame and bank size vs retention")
    add_model_options(parser, results=False)
    add_pruning_options(parser, retention_list=True, multi_mc=True)
    add_auto_text_options(parser)


def handle(args: argparse.Namespace) -> int:
    from sam2prune.prompts import parse_numbers

    refuse_auto_text_options_without_switch(args)
    configs = pruning_configs(args, retentions=args.retention or list(RETENTION_GRID))
    bench(
        pruning=configs,
        video=args.video,
        frames=args.frames,
        point=parse_numbers(args.point, 2, argument="--point") if args.point is not None else None,
        threads=args.threads,
        warmup=args.warmup,
        bf16=args.bf16,
        json_path=args.json,
        plot_path=args.plot,
        model=model_options(args),
        auto_text=auto_text_options(args),
    )
    return 0


COMMAND = Command(
    run=bench,
    add_arguments=add_arguments,
    handle=handle,
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
