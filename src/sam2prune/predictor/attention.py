"""Memory attention: the official module with a dtype fix, and its sparse counterpart."""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from sam2.modeling.memory_attention import MemoryAttention as OfficialMemoryAttention
from sam2.modeling.sam.transformer import RoPEAttention

from sam2prune.sam2_copies import positioned_rope_attention
from sam2prune.scoped import scoped


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


# --- Sparse memory attention -------------------------------------------------------------
#
# SAM 2's RoPEAttention derives token positions from the token count (w = h = sqrt(N)) and tiles
# the query frequencies over the memory keys. With pruning, the queries are a subset of the
# grid and every memory frame carries its own subset, so positions are given explicitly: each
# query and each memory key has the index of its cell in the H x W token grid, and its rotary
# frequencies are gathered from the frequencies of the full grid. The positions travel to the
# attention modules in a context variable set around one call of the official
# ``MemoryAttention.forward``, so the official module and layer forwards run unchanged; without
# positions, ``PositionedRoPEAttention`` is exactly the official ``RoPEAttention``.


@dataclass(frozen=True)
class TokenPositions:
    """Grid cells of the tokens of one memory-attention call.

    Attributes:
        query_cells: ``[B, n_q]`` cell (y * W + x) of each query.
        memory_cells: ``[B, n_m]`` cell of each spatial memory token (object pointers excluded).
        grid: ``(H, W)`` of the token grid.
    """

    query_cells: torch.Tensor
    memory_cells: torch.Tensor
    grid: tuple[int, int]


_POSITIONS: ContextVar[TokenPositions | None] = ContextVar("sam2prune_token_positions", default=None)


def token_positions(positions: TokenPositions) -> AbstractContextManager[TokenPositions]:
    """Give ``PositionedRoPEAttention`` modules called inside the block these token positions."""
    return scoped(_POSITIONS, positions)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select tokens per batch row.

    Args:
        tokens: ``[N, B, C]`` (sequence first, as SAM 2's memory attention takes them).
        index: ``[B, k]`` integer indices into N.

    Returns:
        ``[k, B, C]``.
    """
    batch_first = tokens.transpose(0, 1)
    index = index.long()
    gathered = torch.gather(batch_first, 1, index[..., None].expand(-1, -1, tokens.shape[-1]))
    return gathered.transpose(0, 1)


def scatter_tokens(dense: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Write ``values`` ``[k, B, C]`` into a copy of ``dense`` ``[N, B, C]`` at ``index`` ``[B, k]``."""
    out = dense.transpose(0, 1).clone()
    # .to: a no-op for every shipped config (under autocast both are LayerNorm outputs, float32)
    out.scatter_(1, index.long()[..., None].expand(-1, -1, dense.shape[-1]), values.transpose(0, 1).to(out.dtype))
    return out.transpose(0, 1)


class PositionedRoPEAttention(RoPEAttention):
    """SAM 2's ``RoPEAttention`` (same parameters, same state dict) whose tokens may carry
    explicit grid cells, given by ``token_positions`` for the duration of a call.

    A self-attention module (``rope_k_repeat=False``) rotates queries and keys with the query
    cells; a cross-attention module (``rope_k_repeat=True``, keys from the memory) rotates keys
    with the memory cells; the last ``num_k_exclude_rope`` keys (object pointers) are not
    rotated, as in sam2.
    """

    def grid_freqs(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """``[H*W, head_dim / 2]`` complex frequencies of the full grid, in SAM 2's grid order
        (index y * W + x); computed once per grid (a constant of the module, like sam2's own
        ``freqs_cis``)."""
        cache = self.__dict__.setdefault("_grid_freqs", {})
        key = (height, width, str(device))
        if key not in cache:
            cache[key] = self.compute_cis(end_x=width, end_y=height).to(device)
        return cache[key]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        """Args: q ``[B, n_q, C]``; k, v ``[B, n_k, C_kv]``. Returns ``[B, n_q, C]``."""
        positions = _POSITIONS.get()
        if positions is None:
            return super().forward(q, k, v, num_k_exclude_rope)
        return positioned_rope_attention(self, q, k, v, positions=positions, num_k_exclude_rope=num_k_exclude_rope)


def sparse_memory_attention(
    module: OfficialMemoryAttention,
    curr: torch.Tensor,
    curr_pos: torch.Tensor,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    *,
    query_cells: torch.Tensor,
    memory_cells: torch.Tensor,
    grid: tuple[int, int],
    num_obj_ptr_tokens: int = 0,
) -> torch.Tensor:
    """SAM 2's memory attention over any subset of query tokens and memory tokens.

    Self-attention runs among the given queries only, cross-attention over the given memory
    tokens only; each token rotates with the position of its own grid cell.

    Args:
        module: the model's memory attention (official weights), whose RoPE attentions are
            ``PositionedRoPEAttention``.
        curr, curr_pos: ``[n, B, C]`` query tokens and their sine position embeddings.
        memory, memory_pos: ``[M, B, C_mem]`` memory tokens (spatial first, then
            ``num_obj_ptr_tokens`` object-pointer tokens) and their position embeddings.
        query_cells: ``[B, n]`` grid cell (y * W + x) of each query.
        memory_cells: ``[B, M - num_obj_ptr_tokens]`` grid cell of each spatial memory token.
        grid: ``(H, W)`` of the token grid.
        num_obj_ptr_tokens: trailing memory tokens without rotary encoding.

    Returns:
        ``[n, B, C]``: the module's (layer-normed) output for the queries.
    """
    rope_modules = [
        attention
        for layer in module.layers
        for attention in (layer.self_attn, layer.cross_attn_image)
        if isinstance(attention, RoPEAttention)
    ]
    if not all(isinstance(attention, PositionedRoPEAttention) for attention in rope_modules):
        raise TypeError(
            "sparse memory attention needs PositionedRoPEAttention modules (build the model with build_predictor)"
        )
    positions = TokenPositions(query_cells.long(), memory_cells.long(), grid)
    with token_positions(positions):
        return module(
            curr=curr, memory=memory, curr_pos=curr_pos, memory_pos=memory_pos, num_obj_ptr_tokens=num_obj_ptr_tokens
        )


def dropped_token_fill(module: OfficialMemoryAttention, curr: torch.Tensor, curr_pos: torch.Tensor) -> torch.Tensor:
    """What memory attention outputs for a token none of whose residual branches contributed:
    ``LayerNorm(curr + 0.1 * curr_pos)`` (``[N, B, C]``)."""
    output = curr + 0.1 * curr_pos if module.pos_enc_at_input else curr
    return module.norm(output)
