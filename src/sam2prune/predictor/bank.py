"""The memory bank of a tracked object: what memory attention reads back, and what it holds.

sam2 keeps each object's memories in its per-object output dict (``output_dict_per_obj[obj_idx]``:
``cond_frame_outputs`` and ``non_cond_frame_outputs``, one dict per frame), and its own code
paths (prompting, consolidating prompts, clearing memories around a click, resetting, removing
objects) read and write those dicts. The bank therefore does not duplicate them: it wraps one
object's dict, owns what pruning adds to it (the token indices ``keep_idx`` of every frame
stored sparsely) and everything memory attention reads back from it: which frames a frame
attends to, their stored tokens with their grid cells, the object pointers, and the bytes held.

A frame's indices belong to the exact output dict they were stored with: when sam2 replaces a
frame's output (re-tracking, a new click), the old indices no longer apply and that frame reads
as dense until it is stored sparsely again. So a stored index set never pairs with features
encoded differently.

Bounded memory. sam2 keeps every tracked frame's output (memory features, object pointer, mask
logits) for the whole video. Tracking frame t reads back only a window of them
(``frame_reads``: the spatial memories of ``num_maskmem - 1`` frames on the temporal stride
grid, the object pointers of ``min(num_frames, max_obj_ptrs_in_encoder) - 1`` frames, the
conditioning frames; the pruned predictor's prior also the neighbouring frame's mask). So after
each tracked frame the bank drops (``evict``) every part of a frame it tracked that no later
frame in that direction can read (``reads_after``), and forgets the indices of dropped memories.
What a later click or a pass in another direction needs back is recomputed exactly: every
stretch of consecutive frames an object was tracked over is a ``TrackingRun`` that keeps the
few outputs its first frame read and the conditioning outputs it attended to, so the predictor
can track the stretch again (``missing``, ``replay_scratch``, ``install``) to the same bits.
Conditioning frames and outputs the bank did not produce (a click's) are never dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from sam2prune.sam2_copies import (
    memory_frame_indices,
    object_pointer_tokens,
    pointer_frame_indices,
    select_memory_frames,
)

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

STORAGE_KEYS = ("cond_frame_outputs", "non_cond_frame_outputs")


def index_dtype(num_tokens: int) -> torch.dtype:
    """The most compact integer dtype that holds token indices 0..num_tokens-1."""
    return torch.int16 if num_tokens <= torch.iinfo(torch.int16).max + 1 else torch.int32


def _nbytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


@dataclass(frozen=True)
class FrameMemoryBytes:
    """Bytes one stored frame of one object holds.

    Attributes:
        features: spatial memory features (``maskmem_features``; only the kept tokens).
        indices: their token indices (pruned frames only).
        pointers: the object pointer.
        masks: the frame's low-resolution mask logits (``pred_masks``), which sam2 keeps for
            every frame; memory attention does not read them.
    """

    features: int
    indices: int
    pointers: int
    masks: int

    @property
    def attended(self) -> int:
        """What memory attention reads back: features, indices and pointer."""
        return self.features + self.indices + self.pointers

    @property
    def held(self) -> int:
        """Everything the frame's stored output holds."""
        return self.attended + self.masks


@dataclass(frozen=True)
class FrameReads:
    """What tracking reads back of other frames' non-conditioning outputs (conditioning frames
    are always kept).

    Attributes:
        spatial: frames whose spatial memory (``maskmem_features``) is read.
        pointers: frames whose object pointer (``obj_ptr``) is read.
        masks: frames whose mask logits (``pred_masks``) are read (the token scorer's prior).
    """

    spatial: frozenset[int] = frozenset()
    pointers: frozenset[int] = frozenset()
    masks: frozenset[int] = frozenset()

    @property
    def frames(self) -> frozenset[int]:
        return self.spatial | self.pointers | self.masks

    def __or__(self, other: FrameReads) -> FrameReads:
        return FrameReads(self.spatial | other.spatial, self.pointers | other.pointers, self.masks | other.masks)

    def parts(self, frame_idx: int) -> tuple[str, ...]:
        """The keys of a frame's output that are read."""
        return tuple(
            key
            for key, frames in (
                ("maskmem_features", self.spatial),
                ("obj_ptr", self.pointers),
                ("pred_masks", self.masks),
            )
            if frame_idx in frames
        )


def frame_reads(model: SAM2Base, frame_idx: int, *, reverse: bool, num_frames: int, neighbour_mask: bool) -> FrameReads:
    """What tracking frame ``frame_idx`` reads of the non-conditioning outputs of other frames:
    sam2's own selection (``sam2_copies.memory_frame_indices``, ``pointer_frame_indices``), so
    the window follows the model's ``num_maskmem``, ``memory_temporal_stride_for_eval`` and
    ``max_obj_ptrs_in_encoder``; plus the previous frame's mask with ``neighbour_mask``.
    """
    if model.num_maskmem == 0:  # sam2 reads no memory at all then
        return FrameReads()
    inside = range(num_frames)
    spatial = frozenset(t for _, t in memory_frame_indices(model, frame_idx, track_in_reverse=reverse) if t in inside)
    pointers = frozenset(
        t for _, t in pointer_frame_indices(model, frame_idx, num_frames=num_frames, track_in_reverse=reverse)
    )
    neighbour = frame_idx + 1 if reverse else frame_idx - 1
    masks = frozenset({neighbour}) if neighbour_mask and neighbour in inside else frozenset()
    return FrameReads(spatial, pointers, masks)


def reads_after(model: SAM2Base, frame_idx: int, *, reverse: bool, num_frames: int, neighbour_mask: bool) -> FrameReads:
    """What the frames after ``frame_idx`` in the tracking direction (within the video) read of
    ``frame_idx`` and the frames before it: all that tracking on from ``frame_idx`` still needs.

    A frame reads at most ``1 + stride * (num_maskmem - 2)`` frames back for spatial memories and
    ``max_obj_ptrs_in_encoder - 1`` for pointers, so the frames up to ``stride * num_maskmem +
    max_obj_ptrs_in_encoder`` ahead are all that can read them.
    """
    step = -1 if reverse else 1
    horizon = max(1, model.memory_temporal_stride_for_eval) * model.num_maskmem + model.max_obj_ptrs_in_encoder
    spatial: set[int] = set()
    pointers: set[int] = set()
    masks: set[int] = set()
    for later in range(frame_idx + step, frame_idx + step * (horizon + 1), step):
        if not 0 <= later < num_frames:
            break
        reads = frame_reads(model, later, reverse=reverse, num_frames=num_frames, neighbour_mask=neighbour_mask)
        spatial |= {t for t in reads.spatial if (t - frame_idx) * step <= 0}
        pointers |= {t for t in reads.pointers if (t - frame_idx) * step <= 0}
        masks |= {t for t in reads.masks if (t - frame_idx) * step <= 0}
    return FrameReads(frozenset(spatial), frozenset(pointers), frozenset(masks))


@dataclass(eq=False)
class TrackingRun:
    """Consecutive frames one object was tracked over in one direction, and what it takes to
    track them again to the same bits.

    Attributes:
        reverse: the direction.
        start: the first frame it tracked; last: the last so far (conditioning frames on the
            way count as passed, not tracked).
        inputs: what the frames from ``start`` on read of the frames before it, as it was:
            ``{frame: (output holding only the parts read, keep_idx or None)}``.
        conditioning: the object's conditioning outputs it attended to, by frame (shallow copies:
            the tensors as they were), with the cells of their stored tokens (``keep_idx`` or
            None: dense); the indices are kept here, since the bank forgets them once the output
            is no longer its conditioning one.
        batches: how its frames were tracked, from each frame where that changed on, in tracking
            order: ``(frame, B, row)``, the object was row ``row`` of a batched step of ``B``
            objects (B = 1: alone). Tracking it again takes the same batch size and row, since a
            step's rounding depends on its batch size.
        text: the object's text its frames were tracked with, where tracking reads one (the
            pruned router's text signal); None: none is read.
        pruning_generation: the predictor's pruning config its frames were tracked under
            (``SAM2Predictor.pruning_generation``). Under another one they would be tracked to
            other bits (other tokens kept), so they are not tracked again then.

    Prompts and texts changed since do not stop it from being tracked again to the same bits:
    it keeps the prompted frames' outputs and the text it attended to, and attends to them again
    (as sam2, which keeps every output made with them, reads those).
    """

    reverse: bool
    start: int
    last: int
    inputs: dict[int, tuple[dict, torch.Tensor | None]]
    conditioning: dict[int, tuple[dict, torch.Tensor | None]]
    batches: list[tuple[int, int, int]] = field(default_factory=list)
    text: str | None = None
    pruning_generation: int = 0

    def note_batch(self, frame_idx: int, size: int, row: int) -> None:
        """Frame ``frame_idx`` (the next one it tracks) is tracked as row ``row`` of a step of
        ``size`` objects."""
        if not self.batches or self.batches[-1][1:] != (size, row):
            self.batches.append((frame_idx, size, row))

    def batch_at(self, frame_idx: int) -> tuple[int, int]:
        """(B, row) of the step that tracked ``frame_idx``; (1, 0) where nothing was noted."""
        step = -1 if self.reverse else 1
        found = (1, 0)
        for first, size, row in self.batches:
            if (frame_idx - first) * step < 0:
                break
            found = (size, row)
        return found

    def covers(self, frame_idx: int) -> bool:
        """Whether it tracked (or passed, on a conditioning frame) ``frame_idx``."""
        step = -1 if self.reverse else 1
        return (frame_idx - self.start) * step >= 0 and (self.last - frame_idx) * step >= 0

    @property
    def span(self) -> tuple[int, int] | None:
        """(first, last) frame index it covers, ascending; None before its first frame."""
        if (self.last - self.start) * (-1 if self.reverse else 1) < 0:
            return None
        return min(self.start, self.last), max(self.start, self.last)

    def frames_to(self, frame_idx: int) -> range:
        """Its frames from ``start`` through ``frame_idx``, in tracking order."""
        step = -1 if self.reverse else 1
        return range(self.start, frame_idx + step, step)

    def follows(self, frame_idx: int, reverse: bool) -> bool:
        """Whether tracking ``frame_idx`` in direction ``reverse`` continues this run: the next
        frame, or its last one again (a pass that starts where the one before ended: with
        nothing changed since, which would have ended the run, it is tracked to the same bits,
        but for the batch it is tracked in, which is noted)."""
        return reverse == self.reverse and frame_idx in (self.last, self.last + (-1 if reverse else 1))


@dataclass(frozen=True)
class ClearedFrames:
    """Frames whose non-conditioning outputs sam2 removed (memory cleared around a click)."""

    first: int
    last: int

    def covers(self, frame_idx: int) -> bool:
        return self.first <= frame_idx <= self.last

    @property
    def span(self) -> tuple[int, int]:
        return self.first, self.last


OUTPUT_PARTS = ("maskmem_features", "obj_ptr", "pred_masks")


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of inclusive integer spans, as disjoint spans (adjacent ones joined)."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _stripped(out: dict, keep: Collection[str]) -> dict:
    """A copy of a frame's output holding only the ``keep`` parts (the other keys are None, as
    sam2 stores absent parts; the object score stays with the pointer)."""
    copy = dict(out)
    if "maskmem_features" not in keep:
        copy["maskmem_features"] = copy["maskmem_pos_enc"] = None
    if "obj_ptr" not in keep:
        copy["obj_ptr"] = None
    if "pred_masks" not in keep:
        copy["pred_masks"] = None
    return copy


def _holds(out: dict, part: str) -> bool:
    return out.get(part) is not None


@dataclass
class _HeldBytes:
    """Running totals of the bytes a bank holds."""

    by_frame: dict[tuple[bool, int], FrameMemoryBytes] = field(default_factory=dict)
    features: int = 0
    indices: int = 0
    pointers: int = 0
    masks: int = 0

    def set(self, key: tuple[bool, int], held: FrameMemoryBytes | None) -> None:
        for sign, entry in ((-1, self.by_frame.pop(key, None)), (1, held)):
            if entry is not None:
                self.features += sign * entry.features
                self.indices += sign * entry.indices
                self.pointers += sign * entry.pointers
                self.masks += sign * entry.masks
        if held is not None:
            self.by_frame[key] = held

    @property
    def total(self) -> FrameMemoryBytes:
        return FrameMemoryBytes(self.features, self.indices, self.pointers, self.masks)


@dataclass(frozen=True)
class BankMemory:
    """The memory tokens of one frame's memory attention.

    Attributes:
        memory: ``[M, B, C_mem]`` spatial memory tokens, then the object-pointer tokens.
        memory_pos: ``[M, B, C_mem]`` their position (spatial + temporal) encodings.
        memory_cells: ``[B, M - pointer_tokens]`` grid cell of each spatial memory token.
        pointer_tokens: number of trailing object-pointer tokens.
        sparse: whether any memory frame is stored sparsely.
    """

    memory: torch.Tensor
    memory_pos: torch.Tensor
    memory_cells: torch.Tensor
    pointer_tokens: int
    sparse: bool

    @staticmethod
    def stack(memories: list[BankMemory]) -> BankMemory:
        """The memories of several objects as one batch (they must have the same layout)."""
        first = memories[0]
        if any(m.memory.shape != first.memory.shape or m.pointer_tokens != first.pointer_tokens for m in memories):
            raise ValueError("memories of different layouts cannot be batched")
        return BankMemory(
            memory=torch.cat([m.memory for m in memories], dim=1),
            memory_pos=torch.cat([m.memory_pos for m in memories], dim=1),
            memory_cells=torch.cat([m.memory_cells for m in memories], dim=0),
            pointer_tokens=first.pointer_tokens,
            sparse=any(m.sparse for m in memories),
        )


class SparseMemoryBank:
    """One object's memory bank (see the module docstring).

    Args:
        output_dict: sam2's per-object output dict of the object.
        num_tokens: N, tokens per frame (H * W of the memory grid).
    """

    def __init__(self, output_dict: dict, num_tokens: int) -> None:
        self.output_dict = output_dict
        self.num_tokens = num_tokens
        # keep_idx [B, k] by the identity of the output dict it was stored with (the dict is
        # referenced here, so its id cannot be reused while the entry exists), and that dict by frame
        self._by_output: dict[int, tuple[dict, torch.Tensor]] = {}
        self._by_frame: dict[int, dict] = {}
        # bounded memory: the tracking runs and clears, oldest first; the run being tracked
        self.history: list[TrackingRun | ClearedFrames] = []
        self.active_run: TrackingRun | None = None
        # non-conditioning outputs this bank tracked (or recomputed) and may drop parts of, by
        # frame, with the run that produced them; those held only for their masks apart
        self._produced: dict[int, tuple[dict, TrackingRun]] = {}
        self._held_masks: dict[int, tuple[dict, TrackingRun]] = {}
        # outputs tracked and not yet ended (``end_frame``), with the run that tracked them, by id
        self._tracked_by: dict[int, tuple[dict, TrackingRun]] = {}
        self._held = _HeldBytes()

    # --- storing ------------------------------------------------------------------------------

    def store_sparse(self, frame_idx: int, out: dict, keep_idx: torch.Tensor, *, storage_device: torch.device) -> None:
        """Keep the frame's memory features only at ``keep_idx``: ``[B, C, H, W]`` -> ``[B, C, k]``
        in ``out`` (in place: sam2 stores that same dict), and record the indices in the most
        compact integer dtype.

        Args:
            out: the frame's output dict, with dense ``maskmem_features``.
            keep_idx: ``[B, k]`` ascending cells.
        """
        features = out.get("maskmem_features")
        if features is None or features.dim() != 4:
            raise ValueError(f"frame {frame_idx}: only dense memory features can be stored sparsely")
        flat = features.flatten(2)
        index = keep_idx.to(flat.device).long()[:, None, :].expand(-1, flat.shape[1], -1)
        out["maskmem_features"] = torch.gather(flat, 2, index)
        self.forget(frame_idx)
        self._by_frame[frame_idx] = out
        self._by_output[id(out)] = (out, keep_idx.to(device=storage_device, dtype=index_dtype(self.num_tokens)))

    def record(self, frame_idx: int, out: dict, keep_idx: torch.Tensor | None) -> None:
        """Record the indices of a frame's output whose features are already sparse (a copy of a
        stored output, a recomputed one); None: it is dense."""
        self.forget(frame_idx)
        if keep_idx is not None:
            self._by_frame[frame_idx] = out
            self._by_output[id(out)] = (out, keep_idx)

    def forget(self, frame_idx: int) -> None:
        """Drop the indices recorded for a frame (its output was replaced or dropped)."""
        previous = self._by_frame.pop(frame_idx, None)
        if previous is not None:
            self._by_output.pop(id(previous), None)

    def keep_idx_for(self, out: dict) -> torch.Tensor | None:
        """``[B, k]`` cells of the tokens stored in the output dict ``out``, or None when it is
        stored dense (or is not the output the indices were stored with)."""
        entry = self._by_output.get(id(out))
        return entry[1] if entry is not None and entry[0] is out else None

    # --- reading ------------------------------------------------------------------------------

    def stored_frames(self) -> Iterator[tuple[int, bool, dict, torch.Tensor | None]]:
        """(frame index, is conditioning, output dict, keep_idx or None) of every frame with a
        stored memory."""
        for storage_key in STORAGE_KEYS:
            for frame_idx, out in self.output_dict[storage_key].items():
                if out.get("maskmem_features") is not None:
                    yield frame_idx, storage_key == "cond_frame_outputs", out, self.keep_idx_for(out)

    def has_sparse_frames(self) -> bool:
        """Whether any frame was stored sparsely (cheap: no scan of the frames)."""
        return bool(self._by_output)

    def reads_sparse(self, model: SAM2Base, frame_idx: int, *, track_in_reverse: bool) -> bool:
        """Whether any memory frame that frame ``frame_idx`` attends to is stored sparsely."""
        if not self._by_output:
            return False
        frames, _, _ = select_memory_frames(model, frame_idx, self.output_dict, track_in_reverse=track_in_reverse)
        return any(self.keep_idx_for(out) is not None for _, out in frames)

    def held_frames(self) -> Iterator[tuple[int, bool, dict, torch.Tensor | None]]:
        """(frame index, is conditioning, output dict, keep_idx or None) of every frame the bank
        holds anything of (with bounded memory, some hold only a pointer or a mask)."""
        for storage_key in STORAGE_KEYS:
            for frame_idx, out in self.output_dict[storage_key].items():
                yield frame_idx, storage_key == "cond_frame_outputs", out, self.keep_idx_for(out)

    def frame_bytes(self, out: dict, keep_idx: torch.Tensor | None) -> FrameMemoryBytes:
        return FrameMemoryBytes(
            features=_nbytes(out.get("maskmem_features")),
            indices=_nbytes(keep_idx),
            pointers=_nbytes(out.get("obj_ptr")),
            masks=_nbytes(out.get("pred_masks")),
        )

    # --- what the bank holds ------------------------------------------------------------------

    @property
    def held_bytes(self) -> FrameMemoryBytes:
        """Bytes held over all frames (kept up to date while tracking; ``recount`` after sam2
        changed the outputs itself)."""
        return self._held.total

    def replay_bytes(self) -> int:
        """Bytes its tracking runs keep to track frames again (what their first frames read:
        features, indices, pointers, masks; and the prompted frames' outputs they attended to)
        that the frames it holds do not (with bounded memory, once those frames are dropped)."""
        held = {
            id(tensor)
            for _, _, out, keep_idx in self.held_frames()
            for tensor in (*(out.get(part) for part in OUTPUT_PARTS), keep_idx)
            if tensor is not None
        }
        kept: dict[int, int] = {}
        for run in self.history:
            if not isinstance(run, TrackingRun):
                continue
            read = [(out, keep_idx) for out, keep_idx in run.inputs.values()]
            read += list(run.conditioning.values())
            for out, keep_idx in read:
                for tensor in (*(out.get(part) for part in OUTPUT_PARTS), keep_idx):
                    if tensor is not None and id(tensor) not in held:
                        kept[id(tensor)] = _nbytes(tensor)
        return sum(kept.values())

    def recount(self) -> None:
        self._held = _HeldBytes()
        for frame_idx, conditioning, out, keep_idx in self.held_frames():
            self._held.set((conditioning, frame_idx), self.frame_bytes(out, keep_idx))

    def _account(self, frame_idx: int, out: dict | None) -> None:
        held = None if out is None else self.frame_bytes(out, self.keep_idx_for(out))
        self._held.set((False, frame_idx), held)

    # --- bounded memory -------------------------------------------------------------------------

    def end_run(self) -> None:
        """Tracking stops continuing the current run (the object's state changed: a click merged,
        memories cleared); the next tracked frame starts a new one."""
        self.active_run = None

    def begin_run(
        self, frame_idx: int, *, reverse: bool, inputs: FrameReads, text: str | None, pruning_generation: int = 0
    ) -> None:
        """Before tracking ``frame_idx``, where the current run does not go on: start a new one
        that keeps what the frames from here on read of the frames before (``inputs``, all
        present), tracked with the object's ``text`` under the pruning config
        ``pruning_generation`` (``TrackingRun.text``, ``TrackingRun.pruning_generation``)."""
        non_cond = self.output_dict["non_cond_frame_outputs"]
        kept = {}
        for t in inputs.frames:
            out = non_cond.get(t)
            if out is not None:
                copy = _stripped(out, inputs.parts(t))
                kept[t] = (copy, self.keep_idx_for(out) if _holds(copy, "maskmem_features") else None)
        run = TrackingRun(
            reverse=reverse,
            start=frame_idx,
            last=frame_idx - (-1 if reverse else 1),
            inputs=kept,
            # a shallow copy: the parts attended to as they are now, whatever is written into the
            # output later (replayed frames must read what they read)
            conditioning={
                t: (dict(out), self.keep_idx_for(out)) for t, out in self.output_dict["cond_frame_outputs"].items()
            },
            text=text,
            pruning_generation=pruning_generation,
        )
        self.history.append(run)
        self.active_run = run
        self._forget_shadowed_runs()

    def continues(
        self, run: TrackingRun, frame_idx: int, *, reverse: bool, text: str | None, pruning_generation: int = 0
    ) -> bool:
        """Whether tracking ``frame_idx`` in direction ``reverse`` with the object's ``text``
        under the pruning config ``pruning_generation`` goes on with ``run``: it follows the run
        (``TrackingRun.follows``), under the same config, and the object still attends to what
        the run did: the same conditioning frames, each output holding the same tensors (a dict
        replaced, or a part written into it, is a change) with the same stored tokens, and the
        same text. The hooks where sam2 changes them end the run already; this catches a path
        that changes them without one, since a run tracked again from what it recorded must give
        the bits it gave."""
        if not run.follows(frame_idx, reverse) or run.text != text or run.pruning_generation != pruning_generation:
            return False
        conditioning = self.output_dict["cond_frame_outputs"]
        return conditioning.keys() == run.conditioning.keys() and all(
            conditioning[t].keys() == recorded.keys()
            and all(conditioning[t][part] is value for part, value in recorded.items())
            and self.keep_idx_for(conditioning[t]) is keep_idx
            for t, (recorded, keep_idx) in run.conditioning.items()
        )

    def note_tracked(self, out: dict, run: TrackingRun) -> None:
        """``run`` tracked the output ``out`` (its frame is handed out before ``end_frame``, and
        meanwhile another pass may track this object elsewhere: two generators interleaved)."""
        self._tracked_by[id(out)] = (out, run)

    def end_frame(self, frame_idx: int, out: dict | None, *, reverse: bool) -> None:
        """After the object's output on ``frame_idx`` is stored (``out``; None on its
        conditioning frames): the run that tracked it (on a conditioning frame: the current
        one) goes on through it."""
        if out is None:
            run = self.active_run
            if run is not None and not run.follows(frame_idx, reverse):
                run = self.active_run = None
            if run is not None:
                run.last = frame_idx
            return
        entry = self._tracked_by.pop(id(out), None)
        if entry is not None and entry[0] is out and entry[1].follows(frame_idx, reverse):
            entry[1].last = frame_idx
            self._produced[frame_idx] = (out, entry[1])
            self._held_masks.pop(frame_idx, None)
        self._account(frame_idx, out)

    def cleared(self, first: int, last: int) -> None:
        """sam2 removed the non-conditioning outputs of frames ``first..last`` (the conditioning
        ones among them stay, and so do their indices)."""
        self.history.append(ClearedFrames(first, last))
        self.end_run()
        conditioning = self.output_dict["cond_frame_outputs"]
        for frame_idx in range(first, last + 1):
            self._produced.pop(frame_idx, None)
            self._held_masks.pop(frame_idx, None)
            if frame_idx not in conditioning:
                self.forget(frame_idx)
            self._account(frame_idx, None)

    def evict(self, keep: FrameReads, *, masks_below: int = 0) -> None:
        """Drop every part of the outputs this bank tracked that ``keep`` does not name (what
        later frames read, ``reads_after``), except the masks of frames below ``masks_below``
        (kept for whoever still reads them back). A frame left with nothing is removed, and its
        indices are forgotten. Outputs it did not track (conditioning frames, clicks) stay."""
        non_cond = self.output_dict["non_cond_frame_outputs"]
        for frame_idx in [t for t in self._held_masks if t >= masks_below]:
            self._produced[frame_idx] = self._held_masks.pop(frame_idx)
        for frame_idx, (out, run) in list(self._produced.items()):
            if non_cond.get(frame_idx) is not out:  # replaced or removed by sam2: not the bank's any more
                del self._produced[frame_idx]
                continue
            wanted = set(keep.parts(frame_idx)) | ({"pred_masks"} if frame_idx < masks_below else set())
            held = {part for part in OUTPUT_PARTS if _holds(out, part)}
            kept = held & wanted
            if not kept:
                del non_cond[frame_idx], self._produced[frame_idx]
                self.forget(frame_idx)
                self._account(frame_idx, None)
                continue
            if kept != held:
                stripped = _stripped(out, kept)
                non_cond[frame_idx] = stripped
                self.record(frame_idx, stripped, self.keep_idx_for(out) if "maskmem_features" in kept else None)
                self._account(frame_idx, stripped)
                self._produced[frame_idx] = (stripped, run)
            if kept == {"pred_masks"} and frame_idx < masks_below:  # settled until masks_below drops
                self._held_masks[frame_idx] = self._produced.pop(frame_idx)

    def missing(self, reads: FrameReads) -> dict[TrackingRun, set[int]]:
        """The frames among ``reads`` whose read parts bounded memory dropped, by the run to
        track again to get them back (empty when everything read is there, or was never there:
        not tracked, or removed by sam2)."""
        non_cond = self.output_dict["non_cond_frame_outputs"]
        conditioning = self.output_dict["cond_frame_outputs"]
        missing: dict[TrackingRun, set[int]] = {}
        for frame_idx in reads.frames:
            if frame_idx in conditioning:
                continue
            out = non_cond.get(frame_idx)
            if out is not None and all(_holds(out, part) for part in reads.parts(frame_idx)):
                continue
            latest = next((entry for entry in reversed(self.history) if entry.covers(frame_idx)), None)
            if isinstance(latest, TrackingRun):
                missing.setdefault(latest, set()).add(frame_idx)
        return missing

    def replay_scratch(self, run: TrackingRun) -> tuple[dict, SparseMemoryBank]:
        """An output dict and its bank holding what the run's first frame read, to track the run
        again in (the object's own dict is left alone)."""
        scratch = {
            "cond_frame_outputs": {t: out for t, (out, _) in run.conditioning.items()},
            "non_cond_frame_outputs": {t: out for t, (out, _) in run.inputs.items()},
        }
        bank = SparseMemoryBank(scratch, self.num_tokens)
        for t, (out, keep_idx) in run.inputs.items():
            bank.record(t, out, keep_idx)
        for t, (out, keep_idx) in run.conditioning.items():
            bank.record(t, out, keep_idx)
        return scratch, bank

    def install(self, frame_idx: int, out: dict, keep_idx: torch.Tensor | None, run: TrackingRun) -> None:
        """Put back a frame's output recomputed by tracking ``run`` again."""
        self.output_dict["non_cond_frame_outputs"][frame_idx] = out
        self.record(frame_idx, out, keep_idx)
        self._held_masks.pop(frame_idx, None)
        self._produced[frame_idx] = (out, run)
        self._account(frame_idx, out)

    def _forget_shadowed_runs(self) -> None:
        """Drop history entries whose every frame a later entry covers, and runs that ended
        before tracking a frame (a step that failed)."""
        kept: list[TrackingRun | ClearedFrames] = []
        later: list[tuple[int, int]] = []  # the spans of the entries after, merged
        pending = {id(run) for _, run in self._tracked_by.values()}  # frames tracked, not yet ended
        for entry in reversed(self.history):
            span = entry.span
            if span is None and entry is not self.active_run and id(entry) not in pending:
                continue
            if span is not None:
                if entry is not self.active_run and any(a <= span[0] and span[1] <= b for a, b in later):
                    continue
                later = _merge([*later, span])
            kept.append(entry)
        self.history = kept[::-1]

    def memory(
        self,
        model: SAM2Base,
        frame_idx: int,
        *,
        num_frames: int,
        track_in_reverse: bool,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> BankMemory:
        """The memory tokens frame ``frame_idx`` attends to, with positions and grid cells.

        Selection and encodings are sam2 1.1.0's (``sam2_copies.select_memory_frames``,
        ``object_pointer_tokens``); each stored frame contributes only its stored tokens, with
        the spatial position encoding gathered at their cells (sam2 keeps one shared encoding of
        the full grid, ``maskmem_pos_enc``, so it is never stored per frame).
        """
        all_cells = torch.arange(self.num_tokens, device=device).expand(batch, -1)
        frames, selected_cond, unselected_cond = select_memory_frames(
            model, frame_idx, self.output_dict, track_in_reverse=track_in_reverse
        )
        memory, memory_pos, memory_cells = [], [], []
        sparse = False
        for t_pos, previous in frames:
            keep_idx = self.keep_idx_for(previous)
            features = previous["maskmem_features"].to(device, non_blocking=True).flatten(2)  # [B, C_mem, n]
            position = previous["maskmem_pos_enc"][-1].to(device).flatten(2)  # [B, C_mem, HW], shared
            cells = all_cells
            if keep_idx is not None:
                sparse = True
                cells = keep_idx.to(device).long()
                position = torch.gather(position, 2, cells[:, None, :].expand(-1, position.shape[1], -1))
            memory.append(features.permute(2, 0, 1).to(dtype))
            memory_pos.append(position.permute(2, 0, 1) + model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1])
            memory_cells.append(cells)
        pointer_tokens = 0
        pointers = object_pointer_tokens(
            model,
            frame_idx,
            self.output_dict,
            selected_cond,
            unselected_cond,
            num_frames=num_frames,
            track_in_reverse=track_in_reverse,
            batch=batch,
            device=device,
        )
        if pointers is not None:
            memory.append(pointers[0])
            memory_pos.append(pointers[1])
            pointer_tokens = pointers[0].shape[0]
        return BankMemory(
            memory=torch.cat(memory, dim=0),
            memory_pos=torch.cat(memory_pos, dim=0),
            memory_cells=torch.cat(memory_cells, dim=1),
            pointer_tokens=pointer_tokens,
            sparse=sparse,
        )
