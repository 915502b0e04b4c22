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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sam2prune.sam2_copies import object_pointer_tokens, select_memory_frames

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

    def frame_bytes(self, out: dict, keep_idx: torch.Tensor | None) -> FrameMemoryBytes:
        return FrameMemoryBytes(
            features=_nbytes(out.get("maskmem_features")),
            indices=_nbytes(keep_idx),
            pointers=_nbytes(out.get("obj_ptr")),
            masks=_nbytes(out.get("pred_masks")),
        )

    def memory(
        self,
        model,
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
