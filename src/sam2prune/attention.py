"""Memory attention: the official module with a dtype fix, and its sparse counterpart."""

from __future__ import annotations

import torch
from sam2.modeling.memory_attention import MemoryAttention as OfficialMemoryAttention


class MemoryAttention(OfficialMemoryAttention):
    """SAM 2's memory attention, casting the memory bank to the compute dtype.

    The video predictor stores memory features in bfloat16 and relies on ``torch.cat`` with the
    float32 object pointers to upcast them. When a frame has no object pointer in its memory
    (e.g. propagating in reverse from an already tracked frame) the bf16 memory reaches float32
    linear layers and sam2 1.1.0 fails with "mat1 and mat2 must have the same dtype" on CPU.
    Casting here gives exactly the values the upcast by ``torch.cat`` gives, so all other
    outputs are unchanged. The state dict is the official one.
    """

    def forward(
        self,
        curr: torch.Tensor | list[torch.Tensor],
        memory: torch.Tensor,
        curr_pos: torch.Tensor | list[torch.Tensor] | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        """Args and result as the official module: ``curr`` ``[HW, B, C]``, ``memory`` ``[M, B, C_mem]``."""
        dtype = curr[0].dtype if isinstance(curr, list) else curr.dtype
        memory = memory.to(dtype)
        if memory_pos is not None:
            memory_pos = memory_pos.to(dtype)
        return super().forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)
