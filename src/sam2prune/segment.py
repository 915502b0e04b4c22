"""The segmentation job: prompts in, one label PNG per frame out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sam2prune.data.palette import read_label_png, write_label_png
from sam2prune.data.video import VideoSource
from sam2prune.fsutil import check_output_dir, staged_directory
from sam2prune.prompts import ObjectPrompt, apply_prompts, check_prompts
from sam2prune.viz import check_overlay_path, overlay_labels, write_overlay


@dataclass(frozen=True)
class SegmentResult:
    out_dir: Path
    num_frames: int
    obj_ids: list[int]
    seconds: float  # reading frames + tracking, without building the model

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else float("inf")


def labels_from_logits(obj_ids: list[int], logits: torch.Tensor) -> np.ndarray:
    """One label map from per-object mask logits; overlaps go to the object with the highest logit.

    Args:
        obj_ids: object id of each row of ``logits``.
        logits: ``[num_objects, 1, H, W]`` mask logits at video resolution.

    Returns:
        ``[H, W]`` uint8, 0 where no object's logit is > 0.
    """
    scores = logits[:, 0].float()
    best = scores.argmax(dim=0)
    foreground = scores.gather(0, best[None])[0] > 0
    ids = torch.tensor(obj_ids, dtype=torch.uint8, device=scores.device)
    labels = torch.where(foreground, ids[best], torch.zeros_like(best, dtype=torch.uint8))
    return labels.cpu().numpy()


def propagate_from_prompts(
    predictor, inference_state: dict, first_frame: int
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Track forward from the first prompted frame, then backward from it to frame 0."""
    yield from predictor.propagate_in_video(inference_state, start_frame_idx=first_frame)
    if first_frame > 0:
        for frame_idx, obj_ids, logits in predictor.propagate_in_video(
            inference_state, start_frame_idx=first_frame, reverse=True
        ):
            if frame_idx != first_frame:
                yield frame_idx, obj_ids, logits


def segment_video(
    predictor,
    source: VideoSource,
    prompts: list[ObjectPrompt],
    out_dir: Path,
    *,
    overwrite: bool = False,
    overlay: Path | None = None,
    overlay_fps: float | None = None,
    on_prompted: Callable[[object, dict, dict[int, np.ndarray]], None] | None = None,
) -> SegmentResult:
    """Segment the prompted objects through the video and write DAVIS-style palette PNGs
    (``<frame stem>.png``, 0 = background, k = object id) into ``out_dir``, and optionally an
    overlay video. Nothing is written unless everything succeeds.

    ``on_prompted(predictor, inference_state, masks)`` runs after the prompts are added and
    before tracking (masks: SAM 2's mask of each object on its prompt frame), e.g. to set
    object texts. ``overlay_fps``: frame rate of the overlay (default: the video file's, or
    10 for a folder of frames).

    Raises:
        InputError: bad prompts, output folder, overlay path or frames (each named).
    """
    check_output_dir(out_dir, overwrite=overwrite, inputs=[("video", source.path)])
    if overlay is not None:
        check_overlay_path(overlay)
    if not prompts:
        raise ValueError("at least one prompt is needed")
    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)

    start = time.perf_counter()
    inference_state = predictor.init_state(source)
    first_masks = apply_prompts(predictor, inference_state, prompts)
    if on_prompted is not None:
        on_prompted(predictor, inference_state, first_masks)
    obj_ids = list(inference_state["obj_ids"])
    with staged_directory(out_dir, overwrite=overwrite) as staging:
        written = set()
        for frame_idx, frame_obj_ids, logits in propagate_from_prompts(
            predictor, inference_state, min(p.frame for p in prompts)
        ):
            labels = labels_from_logits(list(frame_obj_ids), logits)
            write_label_png(staging / f"{source.frame_names[frame_idx]}.png", labels)
            written.add(frame_idx)
        seconds = time.perf_counter() - start
        missing = sorted(set(range(len(source))) - written)
        if missing:  # cannot happen when tracking both ways; a guard against silent gaps
            raise RuntimeError(f"no mask was produced for frames {missing[:5]}")
        if overlay is not None:
            frames = (
                overlay_labels(frame, read_label_png(staging / f"{name}.png"))
                for frame, name in zip(source.iter_frames(), source.frame_names)
            )
            write_overlay(overlay, frames, fps=overlay_fps or source.fps or 10.0)
    return SegmentResult(out_dir=out_dir, num_frames=len(source), obj_ids=obj_ids, seconds=seconds)
