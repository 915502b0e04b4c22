"""The static-shape tracking step: the steady state of tracking as one fixed computation on
preallocated device buffers, replayed as a CUDA graph.

Once tracking has gone far enough past an object's prompts in one direction, every tracked
frame reads the same kinds of memory: the conditioning frames (fixed while the prompts are),
the spatial memories of the ``S = num_maskmem - 1`` previous frames (k tokens each when pruned,
all N when dense) and the object pointers of the ``Q = min(num_frames,
max_obj_ptrs_in_encoder) - 1`` previous frames. Every tensor of the step then has a fixed shape,
so the step (memory attention, mask decoder, memory encoder, writing the new memory) can run on
buffers written in place:

- ring buffers of S spatial memories and Q pointers, indexed by the frame's position ``p``
  (the frame index forward, minus it in reverse): frame p writes slot ``p mod S`` (``p mod Q``)
  and reads slots ``(p + j) mod S`` in sam2's order;
- the conditioning part of the memory, as the dict bank assembles it (``SparseMemoryBank.memory``),
  copied in when the step is filled;
- the inputs of a frame (its image features, its kept tokens) copied into fixed tensors.

The position ``p`` is a device tensor that the step advances itself, so a steady frame needs no
data from the host: on CUDA the whole step is captured once as a ``torch.cuda.CUDAGraph`` and
replayed (mode ``graphs``); elsewhere, and to test it, the same step runs eagerly on the same
buffers (mode ``buffers``).

sam2's output dicts stay the truth: the step's outputs are stored there as the eager step's are
(so bounded memory, clicks and reverse passes work on them as before), and the buffers are
filled again from them whenever a frame does not continue the frame the step tracked last
(every ``propagate_in_video`` starts with a fill). A graph is captured again only when a shape
changes (objects in the batch, kept tokens, conditioning frames, dtypes). Frames before the
steady state, prompted frames, corrections and recomputation take the eager path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from sam2prune.predictor.bank import BankMemory, SparseMemoryBank
from sam2prune.predictor.graphs import GraphRunner, WeightCasts
from sam2prune.sam2_copies import (
    conditioning_pointers,
    encode_pointer_tokens,
    memory_frame_indices,
    pointer_frame_indices,
)

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

StaticStepMode = Literal["off", "buffers", "graphs"]
STATIC_STEP_MODES: tuple[StaticStepMode, ...] = ("off", "buffers", "graphs")
# what the step hands back of sam2's track_step output (all that _run_single_frame_inference reads)
OUTPUT_KEYS = ("pred_masks", "obj_ptr", "object_score_logits", "maskmem_features", "maskmem_pos_enc")


def check_mode(mode: str, device: torch.device) -> StaticStepMode:
    """``mode`` if a predictor on ``device`` can run it (``graphs`` needs CUDA).

    Raises:
        ValueError: an unknown mode, or ``graphs`` on a device without CUDA graphs.
    """
    if mode not in STATIC_STEP_MODES:
        raise ValueError(f"static_step must be one of {', '.join(STATIC_STEP_MODES)}, got {mode!r}")
    if mode == "graphs" and device.type != "cuda":
        raise ValueError(f"static_step='graphs' captures CUDA graphs: the predictor runs on {device}")
    return mode


@dataclass(frozen=True)
class StepShape:
    """Everything that fixes a shape or dtype of the step: another value needs other buffers
    (and another graph)."""

    batch: int
    kept: int  # tokens per spatial memory frame (N when dense)
    dense: bool  # queries are every token (retention 1.0): nothing gathered or scattered
    slots: int  # S
    pointer_slots: int  # Q
    cond_tokens: int
    cond_pointers: int
    # sam2's current_vision_feats and current_vision_pos_embeds, per level: (shape, dtype); under
    # autocast the levels differ in dtype (the FPN's top level comes out float32)
    feature_inputs: tuple[tuple[tuple[int, ...], torch.dtype], ...]
    position_inputs: tuple[tuple[tuple[int, ...], torch.dtype], ...]
    feat_sizes: tuple[tuple[int, int], ...]
    position_dtype: torch.dtype  # of sam2's maskmem_pos_enc
    pointer_dtype: torch.dtype
    num_tokens: int
    device: torch.device
    # what the captured step also fixes: the fill of dropped tokens and the autocast dtype
    fill: str
    autocast: torch.dtype | None

    @property
    def feature_dtype(self) -> torch.dtype:
        """The last level's dtype: memory attention's, and the memory's it reads."""
        return self.feature_inputs[-1][1]


@dataclass(frozen=True)
class SteadyFrame:
    """A frame in the steady state, found on the host from sam2's outputs of its objects.

    Attributes:
        spatial: per bank, the outputs of the S memory frames in sam2's order (farthest first).
        spatial_frames: their frame indices.
        pointers: per bank, the outputs of the Q pointer frames, nearest first.
        pointer_frames: their frame indices.
        cond_pointers: per bank, the conditioning outputs whose pointers are read, in sam2's order.
        cond_pointer_frames: their frame indices.
        cond_key: what the conditioning part of the memory was assembled from (frames and the
            identity of their outputs): another key means filling the buffers again.
        cond_tokens: spatial memory tokens of the conditioning frames.
    """

    spatial: tuple[tuple[dict, ...], ...]
    spatial_frames: tuple[int, ...]
    pointers: tuple[tuple[dict, ...], ...]
    pointer_frames: tuple[int, ...]
    cond_pointers: tuple[tuple[dict, ...], ...]
    cond_pointer_frames: tuple[int, ...]
    cond_key: tuple
    cond_tokens: int


def steady_frame(
    model: SAM2Base,
    banks: tuple[SparseMemoryBank, ...],
    frame_idx: int,
    *,
    reverse: bool,
    num_frames: int,
    kept: int | None,
) -> SteadyFrame | None:
    """Whether tracking ``frame_idx`` reads memory of the steady-state layout for every bank
    (None when not): every one of the S spatial memories and Q pointers of the frames just
    before it is a tracked frame's, stored with ``kept`` tokens (None: dense), and every
    conditioning pointer read lies behind it (its distance grows by one per frame).

    Only the default temporal stride (1) and models with object pointers have a steady state here.
    """
    from sam2.modeling.sam2_utils import select_closest_cond_frames

    if model.memory_temporal_stride_for_eval != 1 or model.num_maskmem < 2 or not model.use_obj_ptrs_in_encoder:
        return None
    spatial_frames = tuple(t for _, t in memory_frame_indices(model, frame_idx, track_in_reverse=reverse))
    pointer_frames = tuple(
        t for _, t in pointer_frame_indices(model, frame_idx, num_frames=num_frames, track_in_reverse=reverse)
    )
    if len(pointer_frames) != min(num_frames, model.max_obj_ptrs_in_encoder) - 1 or not pointer_frames:
        return None
    if any(not 0 <= t < num_frames for t in spatial_frames):
        return None
    step = -1 if reverse else 1
    spatial, pointers, cond_pointers, cond_key = [], [], [], []
    cond_layout: tuple[int, tuple[int, ...], tuple[int, ...]] | None = None  # (tokens, pointer frames, frames)
    for bank in banks:
        non_cond = bank.output_dict["non_cond_frame_outputs"]
        selected, _ = select_closest_cond_frames(
            frame_idx, bank.output_dict["cond_frame_outputs"], model.max_cond_frames_in_attn
        )
        memories = tuple(non_cond.get(t) for t in spatial_frames)
        for out in memories:
            if out is None or out.get("maskmem_features") is None:
                return None
            keep_idx = bank.keep_idx_for(out)
            if kept is None:
                if keep_idx is not None or out["maskmem_features"].dim() != 4:
                    return None
            elif keep_idx is None or keep_idx.shape[-1] != kept:
                return None
        read_pointers = tuple(non_cond.get(t) for t in pointer_frames)
        if any(out is None or out.get("obj_ptr") is None for out in read_pointers):
            return None
        conditioning = conditioning_pointers(model, frame_idx, selected, track_in_reverse=reverse)
        frames = tuple(t for t, _, _ in conditioning)
        # a pointer's distance must grow by one per frame: (frame - t) * step, t behind the frame
        if any((frame_idx - t) * step <= 0 or position != (frame_idx - t) * step for t, position, _ in conditioning):
            return None
        tokens = sum(out["maskmem_features"].flatten(2).shape[-1] for out in selected.values())
        layout = (tokens, frames, tuple(selected))
        if cond_layout is not None and layout != cond_layout:  # the batch's conditioning memories must stack
            return None
        cond_layout = layout
        spatial.append(memories)
        pointers.append(read_pointers)
        cond_pointers.append(tuple(out for _, _, out in conditioning))
        cond_key.append(tuple((t, id(out), id(bank.keep_idx_for(out))) for t, out in selected.items()))
    assert cond_layout is not None  # banks is never empty
    cond_tokens, cond_frames, _ = cond_layout
    return SteadyFrame(
        spatial=tuple(spatial),
        spatial_frames=spatial_frames,
        pointers=tuple(pointers),
        pointer_frames=pointer_frames,
        cond_pointers=tuple(cond_pointers),
        cond_pointer_frames=cond_frames,
        cond_key=tuple(cond_key),
        cond_tokens=cond_tokens,
    )


def first_steady_frame(model: SAM2Base, *, num_frames: int) -> int:
    """The first frame in the steady state when tracking forward from prompts on frame 0 only:
    the frame whose S spatial memories and Q pointers are all tracked frames'."""
    return max(model.num_maskmem - 1, min(num_frames, model.max_obj_ptrs_in_encoder) - 1) + 1


class StaticTrackingStep:
    """The buffers of one group of objects' steady-state step, and the step over them.

    Args:
        model: the predictor (sam2's ``SAM2Base``).
        shape: the shapes and dtypes of the step.
        capture: replay the step as a CUDA graph (else it runs eagerly on the buffers).
        weights: the model's weights cast once to the autocast dtype, swapped in while the step
            runs (None: none cast, outside autocast).
    """

    def __init__(self, model: SAM2Base, shape: StepShape, *, capture: bool, weights: WeightCasts | None) -> None:
        self.model = model
        self.shape = shape
        self.weights = weights
        device, batch, kept, memory_dim = shape.device, shape.batch, shape.kept, model.mem_dim
        slots, pointer_slots = shape.slots, shape.pointer_slots
        tpos_dtype = model.maskmem_tpos_enc.dtype
        cond_position_dtype = torch.promote_types(shape.position_dtype, tpos_dtype)
        # inputs of a frame
        self.features = [torch.zeros(size, dtype=dtype, device=device) for size, dtype in shape.feature_inputs]
        self.positions = [torch.zeros(size, dtype=dtype, device=device) for size, dtype in shape.position_inputs]
        self.keep_idx = torch.arange(shape.num_tokens, device=device).repeat(batch, 1)[:, :kept].contiguous()
        # memory: the conditioning part, the rings, where tracking is (p)
        self.cond_memory = torch.zeros(shape.cond_tokens, batch, memory_dim, dtype=shape.feature_dtype, device=device)
        self.cond_position = torch.zeros(shape.cond_tokens, batch, memory_dim, dtype=cond_position_dtype, device=device)
        self.cond_cells = torch.zeros(batch, shape.cond_tokens, dtype=torch.long, device=device)
        self.cond_pointers = torch.zeros(
            shape.cond_pointers, batch, model.hidden_dim, dtype=shape.pointer_dtype, device=device
        )
        self.cond_offsets = torch.zeros(shape.cond_pointers, dtype=torch.long, device=device)
        self.ring_memory = torch.zeros(slots, kept, batch, memory_dim, dtype=shape.feature_dtype, device=device)
        self.ring_position = torch.zeros(slots, kept, batch, memory_dim, dtype=shape.position_dtype, device=device)
        self.ring_cells = torch.zeros(slots, batch, kept, dtype=torch.long, device=device)
        self.pointer_ring = torch.zeros(
            pointer_slots, batch, model.hidden_dim, dtype=shape.pointer_dtype, device=device
        )
        self.memory_position = torch.zeros(
            batch, memory_dim, shape.num_tokens, dtype=shape.position_dtype, device=device
        )
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.slot_offsets = torch.arange(slots, device=device)
        self.pointer_distances = torch.arange(1, pointer_slots + 1, device=device)
        # temporal encoding index of the memory read from slot offset j: sam2's t_pos = j + 1
        self.tpos_index = torch.arange(model.num_maskmem - 2, -1, -1, device=device)[:slots]
        # host side: the frame the buffers are ready for, and what their conditioning part holds
        self.next: tuple[int, bool] | None = None
        self.cond_key: tuple | None = None
        self.num_frames = 0
        self.runner = GraphRunner(f"the tracking step of {shape}", device, capture=capture)
        self.replays = 0  # steady frames run by this step (graph replays or eager runs)

    @property
    def graph(self) -> torch.cuda.CUDAGraph | None:
        return self.runner.graph

    @property
    def capture_error(self) -> str | None:
        """Why capturing failed (the step then runs eagerly)."""
        return self.runner.capture_error

    def mutable(self) -> list[torch.Tensor]:
        """The buffers a step writes besides its outputs (what a graph's warm-up runs must not
        leave changed)."""
        return [self.ring_memory, self.ring_position, self.ring_cells, self.pointer_ring, self.position]

    # --- filling the buffers from sam2's outputs ------------------------------------------------

    def fill(
        self,
        banks: tuple[SparseMemoryBank, ...],
        steady: SteadyFrame,
        frame_idx: int,
        *,
        reverse: bool,
        num_frames: int,
    ) -> None:
        """Copy what ``frame_idx`` reads from the banks' outputs into the buffers."""
        model, shape, device = self.model, self.shape, self.shape.device
        direction = -1 if reverse else 1
        memories = [
            bank.memory(
                model,
                frame_idx,
                num_frames=num_frames,
                track_in_reverse=reverse,
                batch=1,
                device=device,
                dtype=shape.feature_dtype,
            )
            for bank in banks
        ]
        memory = memories[0] if len(memories) == 1 else BankMemory.stack(memories)
        cond = shape.cond_tokens
        self.cond_memory.copy_(memory.memory[:cond])
        self.cond_position.copy_(memory.memory_pos[:cond])
        self.cond_cells.copy_(memory.memory_cells[:, :cond])
        position = steady.spatial[0][0]["maskmem_pos_enc"][-1].to(device).flatten(2)
        self.memory_position.copy_(position.expand(shape.batch, -1, -1))
        every_cell = torch.arange(shape.num_tokens, device=device)[None]
        for frame, outs in zip(steady.spatial_frames, zip(*steady.spatial, strict=True), strict=True):
            slot = frame * direction % shape.slots
            cells = torch.cat(
                [
                    every_cell if shape.dense else bank.keep_idx_for(out).to(device).long()  # type: ignore[union-attr]
                    for bank, out in zip(banks, outs, strict=True)
                ]
            )
            features = torch.cat([out["maskmem_features"].to(device).flatten(2) for out in outs])
            self.ring_memory[slot].copy_(features.permute(2, 0, 1))
            self.ring_cells[slot].copy_(cells)
            self.ring_position[slot].copy_(self._gather_position(self.ring_cells[slot]))
        for frame, outs in zip(steady.pointer_frames, zip(*steady.pointers, strict=True), strict=True):
            self.pointer_ring[frame * direction % shape.pointer_slots].copy_(
                torch.cat([out["obj_ptr"].to(device) for out in outs])
            )
        for i, outs in enumerate(zip(*steady.cond_pointers, strict=True)):
            self.cond_pointers[i].copy_(torch.cat([out["obj_ptr"].to(device) for out in outs]))
        self.cond_offsets.copy_(torch.tensor([t * direction for t in steady.cond_pointer_frames], dtype=torch.long))
        self.position.fill_(frame_idx * direction)
        self.next, self.cond_key, self.num_frames = (frame_idx, reverse), steady.cond_key, num_frames

    def _gather_position(self, cells: torch.Tensor) -> torch.Tensor:
        """``[k, B, C_mem]`` the spatial position encoding at ``cells`` ``[B, k]``."""
        index = cells[:, None, :].expand(-1, self.memory_position.shape[1], -1)
        return torch.gather(self.memory_position, 2, index).permute(2, 0, 1)

    # --- the step (fixed shapes, no host data) --------------------------------------------------

    def memory(self) -> BankMemory:
        """The memory the frame at the current position attends to: the same tokens, positions
        and order as ``SparseMemoryBank.memory`` gives for it."""
        model, shape = self.model, self.shape
        order = torch.remainder(self.position + self.slot_offsets, shape.slots)
        spatial = self.ring_memory.index_select(0, order).flatten(0, 1)
        tpos = model.maskmem_tpos_enc.index_select(0, self.tpos_index)  # [S, 1, 1, C_mem]
        spatial_position = (self.ring_position.index_select(0, order) + tpos).flatten(0, 1)
        cells = self.ring_cells.index_select(0, order).permute(1, 0, 2).flatten(1)
        pointer_order = torch.remainder(self.position - self.pointer_distances, shape.pointer_slots)
        pointers = torch.cat([self.cond_pointers, self.pointer_ring.index_select(0, pointer_order)])
        distances = torch.cat([self.position - self.cond_offsets, self.pointer_distances])
        tokens, token_position = encode_pointer_tokens(
            model,
            pointers,
            distances,
            max_pointers=min(self.num_frames, model.max_obj_ptrs_in_encoder),
            batch=shape.batch,
            device=shape.device,
        )
        return BankMemory(
            memory=torch.cat([self.cond_memory, spatial, tokens]),
            memory_pos=torch.cat([self.cond_position, spatial_position, token_position]),
            memory_cells=torch.cat([self.cond_cells, cells], dim=1),
            pointer_tokens=tokens.shape[0],
            sparse=not shape.dense,
        )

    def write(self, features: torch.Tensor, pointer: torch.Tensor) -> None:
        """Store the tracked frame's memory (``features`` ``[B, C_mem, H, W]``, stored in bfloat16
        as sam2 stores them, at the kept tokens) and pointer ``[B, C]`` in the slots of the
        oldest frames, and move on one frame."""
        slot = torch.remainder(self.position, self.shape.slots)
        stored = features.to(torch.bfloat16).flatten(2)
        kept = torch.gather(stored, 2, self.keep_idx[:, None, :].expand(-1, stored.shape[1], -1))
        self.ring_memory.index_copy_(0, slot, kept.permute(2, 0, 1).to(self.shape.feature_dtype)[None])
        self.ring_cells.index_copy_(0, slot, self.keep_idx[None])
        self.ring_position.index_copy_(0, slot, self._gather_position(self.keep_idx)[None])
        pointer_slot = torch.remainder(self.position, self.shape.pointer_slots)
        self.pointer_ring.index_copy_(0, pointer_slot, pointer.to(self.shape.pointer_dtype)[None])
        self.position.add_(1)

    def run(
        self,
        body: Callable[[], dict],
        features: list[torch.Tensor],
        positions: list[torch.Tensor],
        keep_idx: torch.Tensor | None,
        *,
        frame_idx: int,
        reverse: bool,
    ) -> dict:
        """Track the frame the buffers are ready for: copy its inputs in, run ``body`` (sam2's
        ``track_step`` reading ``memory`` and then ``write``), eagerly or as a graph.

        Returns:
            the ``OUTPUT_KEYS`` of sam2's ``track_step`` output, tensors of their own.
        """
        if self.next != (frame_idx, reverse):
            raise RuntimeError(f"the static step is ready for {self.next}, not frame {frame_idx} (reverse={reverse})")
        for buffer, value in zip(self.features, features, strict=True):
            buffer.copy_(value)
        self.positions[-1].copy_(positions[-1])  # memory attention reads only the last level's
        if keep_idx is not None:
            self.keep_idx.copy_(keep_idx)
        outputs = self.runner(body, written=self.mutable())
        self.replays += 1
        self.next = (frame_idx + (-1 if reverse else 1), reverse)
        return outputs


class StaticSteps:
    """The static steps of one session, by group of objects (the most recently used few)."""

    MAX_STEPS = 32

    def __init__(self) -> None:
        self.steps: OrderedDict[tuple, StaticTrackingStep] = OrderedDict()
        self.fills = 0  # times buffers were filled from sam2's outputs
        self.builds = 0  # times buffers (and graphs) were made for a new shape

    def invalidate(self) -> None:
        """sam2's outputs may have changed (new prompts merged, memory cleared): every step
        fills its buffers again before it runs."""
        for step in self.steps.values():
            step.next = None

    def ready(
        self,
        model: SAM2Base,
        banks: tuple[SparseMemoryBank, ...],
        steady: SteadyFrame,
        shape: StepShape,
        frame_idx: int,
        *,
        reverse: bool,
        num_frames: int,
        capture: bool,
        weights: WeightCasts | None,
        generation: int,
    ) -> StaticTrackingStep:
        """The group's step, ready to track ``frame_idx``: new buffers for a new shape, filled
        from sam2's outputs unless it tracked the frame before in this direction with the same
        conditioning memory. ``generation``: the predictor's (``release_graphs``); a step of
        another is not used."""
        # one step per group and shape (a graph reads the weight casts it was captured with); the
        # direction is not in the key: a reverse pass of the same shape refills the forward pass's
        # buffers instead of capturing a second graph, so two passes advanced in turn refill on
        # every frame (speed only: each fill copies sam2's outputs)
        key = (*(id(bank) for bank in banks), shape, capture, id(weights), generation)
        step = self.steps.get(key)
        if step is None:
            step = StaticTrackingStep(model, shape, capture=capture, weights=weights)
            self.builds += 1
        self.steps[key] = step
        self.steps.move_to_end(key)
        if len(self.steps) > self.MAX_STEPS:
            # drop steps no pass is using first (each group of a pass is visited every frame)
            idle = [k for k, candidate in self.steps.items() if candidate.next is None and k != key]
            for stale in (idle or list(self.steps))[: len(self.steps) - self.MAX_STEPS]:
                del self.steps[stale]
        if step.next != (frame_idx, reverse) or step.cond_key != steady.cond_key or step.num_frames != num_frames:
            step.fill(banks, steady, frame_idx, reverse=reverse, num_frames=num_frames)
            self.fills += 1
        return step
