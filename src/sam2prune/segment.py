"""The segmentation job: prompts in, one label PNG per frame out."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from sam2prune.data.palette import read_label_png, write_label_png
from sam2prune.data.video import VideoSource
from sam2prune.errors import OutputError
from sam2prune.fsutil import (
    OutputFolder,
    check_output_dir,
    is_folder_junk,
    staged_directory,
    write_output_marker,
)
from sam2prune.precision import bf16_autocast
from sam2prune.progress import progress
from sam2prune.prompts import ObjectPrompt, apply_prompts, check_prompts
from sam2prune.viz import check_overlay_path, overlay_labels, write_overlay

if TYPE_CHECKING:
    from sam2prune.predictor import SAM2Predictor

# a hook run after the prompts are added: (predictor, inference state, {obj_id: mask [H, W] bool})
OnPrompted = Callable[[object, dict, dict[int, np.ndarray]], None]


@dataclass(frozen=True)
class SegmentResult:
    out_dir: Path
    num_frames: int
    obj_ids: list[int]
    seconds: float  # reading frames + tracking, without building the model
    overlay_seconds: float | None = None  # writing the overlay video (None: none asked for)

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
    return label_tensor(obj_ids, logits).cpu().numpy()


def label_tensor(obj_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
    """``labels_from_logits`` on the logits' device, without waiting for it: ``[H, W]`` uint8."""
    scores = logits[:, 0].float()
    best = scores.argmax(dim=0)
    foreground = scores.gather(0, best[None])[0] > 0
    ids = torch.tensor(obj_ids, dtype=torch.uint8)
    if scores.device.type == "cuda":  # from pinned memory: the host does not wait
        ids = ids.pin_memory()
    ids = ids.to(scores.device, non_blocking=ids.is_pinned())
    return torch.where(foreground, ids[best], torch.zeros_like(best, dtype=torch.uint8))


class LabelWriter:
    """Writes label maps as palette PNGs (``write_label_png``) on a thread of its own while
    tracking goes on. Labels on a GPU are copied to pinned host memory without waiting, and the
    writing thread waits for the copy: tracking does not wait for a frame's masks to reach the
    host or to be encoded. At most ``pending`` frames wait to be written (then ``write`` waits).

    Use as a context manager: leaving it normally waits until every frame is written and raises
    the first error of the writing thread; leaving it on an error stops the writing.
    """

    def __init__(self, pending: int = 8) -> None:
        self._queue: queue.Queue[tuple[Path, torch.Tensor, torch.cuda.Event | None] | None] = queue.Queue(pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="sam2prune-labels", daemon=True)
        self._thread.start()

    def write(self, path: Path, labels: torch.Tensor) -> None:
        """Write ``labels`` ``[H, W]`` uint8 (any device) to ``path``, soon.

        Raises:
            OutputError: a frame written before could not be written (naming its file); other
                errors of the writing thread as they are.
        """
        self._raise_error()
        event = None
        if labels.device.type == "cuda":
            host = torch.empty(labels.shape, dtype=labels.dtype, pin_memory=True)
            with torch.cuda.device(labels.device):  # the copy and its event on the labels' device
                host.copy_(labels, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            labels = host
        self._queue.put((path, labels, event))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drained, so that write never waits on a failed writer
            path, labels, event = item
            try:
                if event is not None:
                    event.synchronize()
                write_label_png(path, labels.numpy())
            except OutputError as error:  # the write named the file
                self._error = error
            except OSError as error:
                self._error = OutputError(f"cannot write the mask {path}: {error.strerror or error}")
                self._error.__cause__ = error
            except BaseException as error:
                self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait until every frame is written.

        Raises:
            OutputError: a frame could not be written (naming its file); other errors of the
                writing thread as they are.
        """
        self._queue.put(None)
        self._thread.join()
        self._raise_error()

    def __enter__(self) -> LabelWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:  # the error in flight wins; what is left is not written
            self._error = self._error or error
            self._queue.put(None)
            self._thread.join()


def propagate_from_prompts(
    predictor: SAM2Predictor, inference_state: dict
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Track every object forward from its first prompted frame and backward from it to frame 0;
    yield every frame once, with each object's output from the pass that tracked it there.

    The forward pass starts at the earliest prompted frame E, the reverse pass at L, the latest
    first prompt of any object; both with ``only_from_prompts`` (see
    ``SAM2Predictor.propagate_in_video``), so each object is tracked from its first prompt on
    and backwards from it, never over frames it already has from the forward pass. Frames >= L
    come from the forward pass, where every object takes part. On a frame t < L an object whose
    prompts all lie before t takes no part in the reverse pass (its yielded logits there are
    empty) but was tracked forward on it, so frames < L are assembled, once the reverse pass has
    reached them, from every object's stored output: the forward one, or the reverse one for
    objects prompted at or after t (an object prompted on several frames is re-tracked in
    reverse between its prompts below L).

    With bounded memory, the masks of frames below L are kept until the reverse pass has read
    them back (``SAM2Predictor.keep_masks_below``), at most L frames' worth; everything else is
    bounded as in any tracking.

    Yields:
        ``(frame_idx, obj_ids, logits)``, logits ``[num_objects, 1, video_H, video_W]``: frames
        L..end in order, then L-1 down to 0.
    """
    # prompts reach the per-object outputs as conditioning frames only in sam2's preflight
    predictor.propagate_in_video_preflight(inference_state)
    first_prompts = [min(outputs["cond_frame_outputs"]) for outputs in inference_state["output_dict_per_obj"].values()]
    earliest, latest = min(first_prompts), max(first_prompts)
    predictor.keep_masks_below(inference_state, latest)
    try:
        for frame_idx, obj_ids, logits in predictor.propagate_in_video(
            inference_state, start_frame_idx=earliest, only_from_prompts=True
        ):
            if frame_idx >= latest:
                yield frame_idx, obj_ids, logits
        if latest > 0:
            for frame_idx, obj_ids, _ in predictor.propagate_in_video(
                inference_state, start_frame_idx=latest, reverse=True, only_from_prompts=True
            ):
                if frame_idx < latest:
                    yield frame_idx, obj_ids, stored_frame_logits(predictor, inference_state, frame_idx)
                    predictor.keep_masks_below(inference_state, frame_idx)  # read back: no longer needed
    finally:
        predictor.keep_masks_below(inference_state, 0)


def stored_frame_logits(predictor: SAM2Predictor, inference_state: dict, frame_idx: int) -> torch.Tensor:
    """Every object's latest output on a frame, as ``propagate_in_video`` yields it.

    Returns:
        ``[num_objects, 1, video_H, video_W]`` mask logits, in ``inference_state["obj_ids"]`` order:
        the stored low-res masks, resized together by sam2's own ``_get_orig_video_res_output``.

    Raises:
        RuntimeError: an object has no output on the frame (it was not tracked there).
    """
    masks = []
    for obj_idx, obj_id in enumerate(inference_state["obj_ids"]):
        outputs = inference_state["output_dict_per_obj"][obj_idx]
        out = outputs["cond_frame_outputs"].get(frame_idx, outputs["non_cond_frame_outputs"].get(frame_idx))
        if out is None:
            raise RuntimeError(f"object {obj_id} was not tracked on frame {frame_idx}")
        masks.append(out["pred_masks"].to(inference_state["device"], non_blocking=True))
    _, video_res_masks = predictor._get_orig_video_res_output(inference_state, torch.cat(masks, dim=0))
    return video_res_masks


def _is_label_png(path: Path) -> bool:
    """A single-channel (palette or grey) PNG, as segment writes: not a photo or a screenshot."""
    if is_folder_junk(path):
        return True
    if path.suffix.lower() != ".png":
        return False
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.mode in ("P", "L", "1")
    except OSError:
        return False


# what segment writes into its output folder, and so the only folder --overwrite replaces
MASK_FOLDER = OutputFolder(_is_label_png, "label PNGs", marker=".sam2prune-segment", command="sam2prune segment")


def segment_video(
    predictor: SAM2Predictor,
    source: VideoSource,
    prompts: list[ObjectPrompt],
    out_dir: Path,
    *,
    overwrite: bool = False,
    overlay: Path | None = None,
    overlay_fps: float | None = None,
    on_prompted: OnPrompted | None = None,
    bounded_memory: bool = True,
    bf16: bool = False,
) -> SegmentResult:
    """Segment the prompted objects through the video and write DAVIS-style palette PNGs
    (``<frame stem>.png``, 0 = background, k = object id) into ``out_dir``, and optionally an
    overlay video. Nothing is written unless everything succeeds. Frames are read and masks
    written one at a time, and with ``bounded_memory`` (see ``SAM2Predictor.init_state``) the
    tracking state stays bounded too, so memory does not grow with the video.

    ``on_prompted(predictor, inference_state, masks)`` runs after the prompts are added and
    before tracking (masks: SAM 2's mask of each object on its prompt frame), e.g. to set
    object texts. ``overlay_fps``: frame rate of the overlay (default: the video file's, or
    10 for a folder of frames). ``bf16``: track under bfloat16 autocast, as SAM 2's GPU examples
    do (on CUDA only).

    Raises:
        InputError: bad prompts, output folder, overlay path or frames (each named).
        ValueError: ``bf16`` for a predictor that is not on a CUDA device.
    """
    check_output_dir(out_dir, overwrite=overwrite, inputs=[("video", source.path)], holds_only=MASK_FOLDER)
    if overlay is not None:
        check_overlay_path(overlay, out_dir=out_dir, inputs=[("video", source.path)], overwrite=overwrite)
    if not prompts:
        raise ValueError("at least one prompt is needed")
    check_prompts(prompts, num_frames=len(source), width=source.width, height=source.height)

    start = time.perf_counter()
    with bf16_autocast(bf16, predictor.device):
        inference_state = predictor.init_state(source, bounded_memory=bounded_memory)
        first_masks = apply_prompts(predictor, inference_state, prompts)
        if on_prompted is not None:
            on_prompted(predictor, inference_state, first_masks)
    obj_ids = list(inference_state["obj_ids"])
    with staged_directory(out_dir, overwrite=overwrite, holds_only=MASK_FOLDER) as staging:
        written: set[int] = set()
        with (
            bf16_autocast(bf16, predictor.device),
            LabelWriter() as writer,
        ):  # tracking goes on while frames are written
            for frame_idx, frame_obj_ids, logits in propagate_from_prompts(predictor, inference_state):
                writer.write(
                    staging / f"{source.frame_names[frame_idx]}.png", label_tensor(list(frame_obj_ids), logits)
                )
                written.add(frame_idx)
        seconds = time.perf_counter() - start
        missing = sorted(set(range(len(source))) - written)
        if missing:  # cannot happen when tracking both ways; a guard against silent gaps
            raise RuntimeError(f"no mask was produced for frames {missing[:5]}")
        write_output_marker(
            staging,
            MASK_FOLDER.marker,
            note=f"masks of {source.path} written by sam2prune segment: --overwrite replaces this folder only while "
            "it holds no other files than these",
            files=[f"{name}.png" for name in source.frame_names],
        )
        overlay_seconds = None
        if overlay is not None:
            overlay_start = time.perf_counter()
            frames = (
                overlay_labels(frame, read_label_png(staging / f"{name}.png"))
                for frame, name in zip(source.iter_frames(), source.frame_names, strict=False)
            )
            shown = progress(frames, desc=f"overlay {overlay.name}", total=len(source), unit="frame")
            write_overlay(overlay, shown, fps=overlay_fps or source.fps or 10.0)
            overlay_seconds = time.perf_counter() - overlay_start
    return SegmentResult(
        out_dir=out_dir, num_frames=len(source), obj_ids=obj_ids, seconds=seconds, overlay_seconds=overlay_seconds
    )
