"""``sam2prune prompt``: the automatic description of the prompted object (region -> caption ->
phrase), or only the refinement of a caption."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sam2prune.cli.common import (
    AutoTextOptions,
    Command,
    ModelOptions,
    add_auto_text_options,
    add_model_options,
    at_most_one,
    auto_text_options,
    auto_text_pipeline,
    build,
    embedded_clip,
    frame_index,
    model_options,
    path_argument,
    resolve_device,
    resolve_weights,
)
from sam2prune.errors import InputError
from sam2prune.wording import no_effect

if TYPE_CHECKING:
    from sam2prune.prompts import ObjectPrompt
    from sam2prune.text.auto import AutoText


def prompt(
    *,
    video: Path | None = None,
    prompts: Sequence[ObjectPrompt] = (),
    frame: int = 0,
    detector_weights: Path | None = None,
    auto_text: AutoTextOptions = AutoTextOptions(),
    model: ModelOptions = ModelOptions(),
) -> AutoText:
    """Describe the prompted object on ``frame`` and print the region, the caption, each
    stage's time and the phrase.

    Args:
        video: a folder of frames or a video file; None: the embedded clip.
        prompts: the object's prompt on ``frame``: the region is its box, else the box of SAM 2's
            mask for its clicks, else of its mask. Without one, the top-objectness proposal of
            the region proposal network with ``detector_weights``.
        model: SAM 2, which runs only for clicks.
    """
    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import check_prompts
    from sam2prune.text.auto import frame_key, top_objectness_box

    pipeline = auto_text_pipeline(auto_text, device=model.device, command="prompt")
    needs_sam = bool(prompts) and bool(prompts[0].points) and prompts[0].box is None
    if needs_sam:
        weights = resolve_weights(model, required=True)
    elif model.checkpoint is not None or model.random_weights:
        raise InputError(
            "--checkpoint/--random-weights: SAM 2 runs only for a --point prompt (its mask gives the region)"
        )
    if detector_weights is not None and prompts:
        raise InputError(
            "--detector-weights is for the no-prompt case (the top-objectness proposal); a prompt was given"
        )
    clip = video if video is not None else embedded_clip()
    source = VideoSource.open(clip)
    check_prompts(list(prompts), num_frames=len(source), width=source.width, height=source.height)
    if frame >= len(source):
        raise InputError(f"--frame {frame} is out of range; the video has {len(source)} frames")
    if not prompts:
        start = time.perf_counter()
        image = source.read_frame(frame)
        box = top_objectness_box(image, detector_weights, device=resolve_device(model.device))
        result = pipeline.describe(
            image, box, "detector", video_key=frame_key(source, frame), roi_seconds=time.perf_counter() - start
        )
    else:
        from sam2prune.text.auto import describe_objects

        masks = {}
        if needs_sam:
            # the region is the box of SAM 2's mask for the click
            from sam2prune.prompts import apply_prompts

            predictor = build(model, weights)
            state = predictor.init_state(source.head(frame + 1))
            masks = apply_prompts(predictor, state, list(prompts))
        result = describe_objects(pipeline, source, list(prompts), masks)[prompts[0].obj_id]
    print(f"region: {result.box} from {result.roi_source}")
    print(f"caption: {result.caption}")
    timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.seconds.items())
    print(f"time: {timings}" + (" (cached result)" if result.cached else ""))
    print(f"phrase: {result.phrase}")
    return result


def refine_caption(*, caption: str, auto_text: AutoTextOptions = AutoTextOptions(), device: str = "auto") -> str:
    """Only the last stage: distil ``caption`` with ``auto_text.refiner`` to at most
    ``auto_text.max_words`` words; print the refiner's times and the phrase, return the phrase."""
    from sam2prune.text.auto import load_refiner

    start = time.perf_counter()
    refiner = load_refiner(auto_text.refiner, max_words=auto_text.max_words, device=resolve_device(device))
    loaded = time.perf_counter()
    phrase = refiner.refine(caption)
    print(f"refiner: {refiner.name} (load {loaded - start:.2f} s, refine {time.perf_counter() - loaded:.2f} s)")
    print(phrase)
    return phrase


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "video",
        nargs="?",
        type=path_argument,
        metavar="VIDEO",
        help="folder of frames or a video file (default: the embedded clip)",
    )
    parser.add_argument("--caption", metavar="TEXT", help="refine this caption only (no video, no captioner)")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y",
        help="positive click on the object; the region is the box of SAM 2's mask for it (repeatable)",
    )
    parser.add_argument(
        "--neg", action="append", default=[], metavar="X,Y", help="negative click, with --point (repeatable)"
    )
    parser.add_argument(
        "--box", action="append", default=[], metavar="X0,Y0,X1,Y1", help="the region itself, in pixels (one)"
    )
    parser.add_argument(
        "--mask",
        action="append",
        default=[],
        type=path_argument,
        metavar="PNG",
        help="object mask; the region is its box",
    )
    parser.add_argument("--frame", type=frame_index, metavar="N", help="frame of the prompt (default: 0)")
    parser.add_argument(
        "--detector-weights",
        type=path_argument,
        metavar="FILE",
        help="torchvision fasterrcnn_resnet50_fpn weights, for the no-prompt case",
    )
    add_auto_text_options(parser, switch=False)
    add_model_options(parser)


def handle(args: argparse.Namespace) -> int:
    from sam2prune.prompts import prompts_from_arguments

    model = model_options(args)
    box, mask = at_most_one(args.box, "--box"), at_most_one(args.mask, "--mask")
    if args.caption is not None:
        unused = [
            name
            for name, given in (
                ("VIDEO", args.video is not None),
                ("--point", args.point),
                ("--neg", args.neg),
                ("--box", box is not None),
                ("--mask", mask is not None),
                ("--frame", args.frame is not None),
                ("--captioner", args.captioner is not None),
                ("--detector-weights", args.detector_weights is not None),
                ("--caption-prompt", args.caption_prompt is not None),
                ("--checkpoint", model.checkpoint is not None),
                ("--random-weights", model.random_weights),
            )
            if given
        ]
        if unused:
            raise InputError(f"with --caption only the refiner runs: {no_effect(unused)}")
        refine_caption(caption=args.caption, auto_text=auto_text_options(args), device=model.device)
        return 0
    if box is not None and (args.point or args.neg):
        clicks = "/".join(option for option, given in (("--point", args.point), ("--neg", args.neg)) if given)
        raise InputError(f"--box is the region itself: {clicks} would have no effect with it")
    frame = args.frame if args.frame is not None else 0
    # a label PNG's object keeps its id
    prompts = prompts_from_arguments(
        points=args.point, negatives=args.neg, box=box, mask=mask, frame=frame, obj_id=None
    )
    if len(prompts) > 1:
        ids = ", ".join(str(p.obj_id) for p in prompts)
        raise InputError(f"--mask {mask} holds objects {ids}: prompt describes one object; give a mask of one")
    prompt(
        video=args.video,
        prompts=prompts,
        frame=frame,
        detector_weights=args.detector_weights,
        auto_text=auto_text_options(args),
        model=model,
    )
    return 0


COMMAND = Command(
    run=prompt,
    add_arguments=add_arguments,
    handle=handle,
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
