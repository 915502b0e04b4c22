"""``sam2prune segment``: prompted objects through a video into DAVIS palette PNGs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sam2prune.cli.common import (
    AutoTextOptions,
    Command,
    GpuOptions,
    MemoryOptions,
    ModelOptions,
    add_auto_text_options,
    add_gpu_options,
    add_memory_options,
    add_model_options,
    add_pruning_options,
    at_most_one,
    auto_text_hook,
    auto_text_options,
    auto_text_pipeline,
    build,
    check_gpu_options,
    embedded_clip,
    frame_index,
    gpu_options,
    log,
    memory_options,
    model_options,
    object_id,
    path_argument,
    pruning_configs,
    refuse_auto_text_options_without_switch,
    refuse_pruning_options_for_sam2,
    resolve_device,
    resolve_weights,
)
from sam2prune.config import PruningConfig
from sam2prune.errors import InputError
from sam2prune.wording import counted

if TYPE_CHECKING:
    from sam2prune.prompts import ObjectPrompt
    from sam2prune.segment import SegmentResult


def segment(
    *,
    out: Path,
    video: Path | None = None,
    prompts: Sequence[ObjectPrompt] | Path | None = None,
    overwrite: bool = False,
    overlay: Path | None = None,
    fps: float | None = None,
    model: ModelOptions = ModelOptions(),
    pruning: PruningConfig | None = PruningConfig(),
    auto_text: AutoTextOptions = AutoTextOptions(),
    prompt_files: Sequence[tuple[str, Path]] = (),
    memory: MemoryOptions = MemoryOptions(),
    gpu: GpuOptions = GpuOptions(),
) -> SegmentResult:
    """Segment objects through a video into DAVIS palette PNGs in ``out``.

    Args:
        out: output folder, created, or replaced as a whole with ``overwrite`` (an earlier
            output only: label PNGs and the marker segment leaves, ``MASK_FOLDER``).
        video: a folder of frames or a video file; None: the embedded clip.
        prompts: the objects' prompts, or a prompts JSON file; None: the embedded clip's
            default clicks (only without ``video``).
        overlay: also write the masks over the frames there (.mp4 or .gif), at ``fps`` (an
            existing file only with ``overwrite``).
        pruning: None: the unpruned official predictor.
        auto_text: how objects are described when ``pruning.auto_text`` is on.
        prompt_files: ``(option, path)`` of files the ``prompts`` were read from, which
            ``out`` must not overlap either.
        memory: whether the tracking state is bounded (the default) or keeps everything.
        gpu: bf16 autocast, and how the pruned predictor runs steady-state frames.
    """
    from sam2prune.data.video import VideoSource
    from sam2prune.fsutil import check_output_dir
    from sam2prune.prompts import check_prompts, load_prompts_file, prompts_file_inputs
    from sam2prune.segment import MASK_FOLDER, segment_video
    from sam2prune.viz import check_overlay_path

    clip = video if video is not None else embedded_clip()
    inputs = [("VIDEO", clip), *prompt_files]
    if isinstance(prompts, Path):
        prompts_file = prompts
        prompts = load_prompts_file(prompts_file)
        inputs += prompts_file_inputs(prompts_file, prompts)
    check_output_dir(out, overwrite=overwrite, inputs=inputs, holds_only=MASK_FOLDER)
    if overlay is not None:
        check_overlay_path(overlay, out_dir=out, inputs=inputs, overwrite=overwrite)
    elif fps is not None:
        raise InputError("--fps is the frame rate of the --overlay video; it has no effect without --overlay")
    if fps is not None and not fps > 0:
        raise InputError(f"--fps must be > 0, got {fps}")
    check_gpu_options(gpu, resolve_device(model.device), pruned=pruning is not None)
    weights = resolve_weights(model, required=True)
    source = VideoSource.open(clip)

    if prompts:
        prompts = list(prompts)
    elif video is None:
        prompts = load_prompts_file(embedded_clip() / "prompts.json")
        log.info("no prompt given: using the embedded clip's default clicks (%s)", embedded_clip() / "prompts.json")
    else:
        raise InputError("no prompt given: pass --point X,Y, --box X0,Y0,X1,Y1, --mask PNG or --prompts FILE.json")
    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)

    hook = None
    if pruning is not None and pruning.auto_text:
        if pruning.scorer != "router":
            raise InputError("--auto-text drives the router's text signal: use --method pruned with --scorer router")
        hook = auto_text_hook(auto_text_pipeline(auto_text, device=model.device, command="segment"), source, prompts)
    predictor = build(model, weights, pruning)
    if pruning is not None:
        predictor.set_static_step(gpu.static_step)
    result = segment_video(
        predictor,
        source,
        prompts,
        out,
        overwrite=overwrite,
        overlay=overlay,
        overlay_fps=fps,
        on_prompted=hook,
        bounded_memory=not memory.unbounded_memory,
        bf16=gpu.bf16,
    )
    ids = f"{'id' if len(result.obj_ids) == 1 else 'ids'} {', '.join(map(str, result.obj_ids))}"
    print(
        f"segmented {counted(result.num_frames, 'frame')}, {counted(len(result.obj_ids), 'object')} ({ids}) "
        f"in {result.seconds:.1f} s ({result.frames_per_second:.2f} frames/s) -> {result.out_dir}"
        + (f"; overlay written in {result.overlay_seconds:.1f} s -> {overlay}" if overlay else "")
    )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sam2prune.data.video import VIDEO_SUFFIXES

    parser.add_argument(
        "video",
        nargs="?",
        type=path_argument,
        metavar="VIDEO",
        help="folder of JPEG/PNG frames (natural sort of names) or a video file "
        f"({', '.join(sorted(suffix[1:] for suffix in VIDEO_SUFFIXES))})",
    )
    parser.add_argument(
        "--out",
        type=path_argument,
        required=True,
        metavar="DIR",
        help="output folder for the PNGs (created in an existing folder; replaced as a whole)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier output of segment (label PNGs and the .sam2prune-segment file it leaves; a "
        "folder holding other files, or label PNGs without that file, is refused) and an existing --overlay file",
    )
    prompts = parser.add_argument_group("prompts (pixel coordinates of the original frames)")
    prompts.add_argument("--point", action="append", default=[], metavar="X,Y", help="positive click (repeatable)")
    prompts.add_argument("--neg", action="append", default=[], metavar="X,Y", help="negative click (repeatable)")
    prompts.add_argument(
        "--box", action="append", default=[], metavar="X0,Y0,X1,Y1", help="box around the object (one)"
    )
    prompts.add_argument(
        "--mask",
        action="append",
        default=[],
        type=path_argument,
        metavar="PNG",
        help="object mask (one file): a plain mask (0 and 255, or 0 and 1) is one object; a label PNG "
        "(e.g. a DAVIS annotation, or ids 1..254 as grey values) adds one object per id, with its ids, and "
        "--obj-id then picks one of them; a soft greyscale mask (255 with other values) is refused: threshold it",
    )
    prompts.add_argument("--frame", type=frame_index, metavar="N", help="frame of the prompts (default: 0)")
    prompts.add_argument(
        "--obj-id",
        type=object_id,
        metavar="K",
        help="object id of the points, box or plain mask (default: 1); for a label PNG holding other ids than 1, "
        "the one id to keep",
    )
    prompts.add_argument(
        "--prompts", type=path_argument, metavar="FILE.json", help="several objects on several frames (see below)"
    )
    parser.add_argument(
        "--overlay", type=path_argument, metavar="FILE", help="also write the masks over the frames as .mp4 or .gif"
    )
    parser.add_argument(
        "--fps",
        type=float,
        metavar="FPS",
        help="frame rate of the --overlay video (default: the video file's own; 10 for a folder of frames)",
    )
    add_model_options(parser)
    parser.add_argument(
        "--method",
        choices=("pruned", "sam2"),
        default="pruned",
        help="pruned = token-pruned predictor; sam2 = the unpruned official predictor (default: %(default)s)",
    )
    add_pruning_options(parser)
    add_auto_text_options(parser)
    add_memory_options(parser)
    add_gpu_options(parser)


def handle(args: argparse.Namespace) -> int:
    from sam2prune.prompts import prompts_from_arguments

    if args.method == "sam2":
        refuse_pruning_options_for_sam2(args)
    refuse_auto_text_options_without_switch(args)
    pruning = pruning_configs(args)[0] if args.method == "pruned" else None
    box, mask = at_most_one(args.box, "--box"), at_most_one(args.mask, "--mask")
    if args.prompts is not None:
        options = {"--point": args.point, "--neg": args.neg, "--box": box, "--mask": mask, "--frame": args.frame}
        mixed = [name for name, value in {**options, "--obj-id": args.obj_id}.items() if value not in (None, [])]
        if mixed:
            raise InputError(
                f"--prompts gives every object's frame, id and prompts: it cannot be combined with {', '.join(mixed)}"
            )
    from_arguments = prompts_from_arguments(
        points=args.point,
        negatives=args.neg,
        box=box,
        mask=mask,
        frame=args.frame if args.frame is not None else 0,
        obj_id=args.obj_id,
    )
    given = [name for name, value in (("--frame", args.frame), ("--obj-id", args.obj_id)) if value is not None]
    if given and not from_arguments and args.prompts is None:
        raise InputError(
            f"{' and '.join(given)} {'say' if len(given) > 1 else 'says'} which frame and object --point, --box or "
            "--mask belong to: give one of those too (without any prompt, the embedded clip's default clicks are used)"
        )
    segment(
        out=args.out,
        video=args.video,
        prompts=args.prompts if args.prompts is not None else from_arguments or None,
        overwrite=args.overwrite,
        overlay=args.overlay,
        fps=args.fps,
        model=model_options(args),
        pruning=pruning,
        auto_text=auto_text_options(args),
        prompt_files=[("--mask", mask)] if mask is not None else [],
        memory=memory_options(args),
        gpu=gpu_options(args),
    )
    return 0


COMMAND = Command(
    run=segment,
    add_arguments=add_arguments,
    handle=handle,
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
        "coordinates are pixels of the original frames; mask paths are relative to the JSON file; obj_id\n"
        "defaults to 1 (for a label-PNG mask: the PNG's ids, or the one to keep); labels to all positive."
    ),
    examples=(
        "sam2prune segment path/to/frames --point 320,240 --out masks/ --checkpoint sam2.1_hiera_tiny.pt --overlay masks.mp4",
        "sam2prune segment --out bedroom_masks --random-weights    # the embedded clip, random weights",
        "sam2prune segment video.mp4 --point 320,240 --out masks/ --device cuda --bf16 --static-step graphs",
    ),
)
