"""Memory attention: the official module with a dtype fix, and its sparse counterpart."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sam2.modeling.memory_attention import MemoryAttention as OfficialMemoryAttention
from sam2.modeling.memory_attention import MemoryAttentionLayer
from sam2.modeling.sam.transformer import Attention, RoPEAttention


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
# frequencies are gathered from the frequencies of the full grid. With all indices present this
# reproduces the official computation exactly.


class RopeTable:
    """Rotary frequencies of full token grids, computed once per grid and attention config."""

    def __init__(self) -> None:
        self._grids: dict[tuple, torch.Tensor] = {}

    def grid(self, attention: RoPEAttention, height: int, width: int, device: torch.device) -> torch.Tensor:
        """``[H*W, head_dim / 2]`` complex frequencies, in SAM 2's grid order (index y * W + x)."""
        key = (tuple(sorted(attention.compute_cis.keywords.items())), height, width, str(device))
        if key not in self._grids:
            self._grids[key] = attention.compute_cis(end_x=width, end_y=height).to(device)
        return self._grids[key]


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
    out.scatter_(1, index.long()[..., None].expand(-1, -1, dense.shape[-1]), values.transpose(0, 1))
    return out.transpose(0, 1)


def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary encoding of ``x`` ``[B, heads, n, d]`` with per-token ``freqs`` ``[B, n, d/2]``."""
    x_complex = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(x_complex * freqs[:, None]).flatten(3).type_as(x)


def rope_attention(
    attention: Attention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_freqs: torch.Tensor | None,
    k_freqs: torch.Tensor | None,
    num_k_exclude_rope: int = 0,
) -> torch.Tensor:
    """``RoPEAttention.forward`` with explicit per-token frequencies.

    Args:
        attention: SAM 2 ``RoPEAttention`` (or plain ``Attention``, then no rotation).
        q: ``[B, n_q, C]``; k, v: ``[B, n_k, C_kv]``.
        q_freqs: ``[B, n_q, d/2]`` complex; k_freqs: ``[B, n_k - num_k_exclude_rope, d/2]``.
        num_k_exclude_rope: trailing keys without rotation (object pointers).

    Returns:
        ``[B, n_q, C]``.
    """
    q = attention._separate_heads(attention.q_proj(q), attention.num_heads)
    k = attention._separate_heads(attention.k_proj(k), attention.num_heads)
    v = attention._separate_heads(attention.v_proj(v), attention.num_heads)
    if isinstance(attention, RoPEAttention):
        num_k_rope = k.size(-2) - num_k_exclude_rope
        q = _rotate(q, q_freqs)
        if num_k_rope > 0:
            k[:, :, :num_k_rope] = _rotate(k[:, :, :num_k_rope], k_freqs)
    dropout_p = attention.dropout_p if attention.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return attention.out_proj(attention._recombine_heads(out))


def _memory_attention_layer(
    layer: MemoryAttentionLayer,
    tgt: torch.Tensor,
    memory: torch.Tensor,
    *,
    pos: torch.Tensor,
    query_pos: torch.Tensor,
    self_freqs: torch.Tensor | None,
    cross_q_freqs: torch.Tensor | None,
    cross_k_freqs: torch.Tensor | None,
    num_k_exclude_rope: int,
) -> torch.Tensor:
    """``MemoryAttentionLayer.forward`` with explicit frequencies; tensors batch first."""
    tgt2 = layer.norm1(tgt)
    q = k = tgt2 + query_pos if layer.pos_enc_at_attn else tgt2
    tgt2 = rope_attention(layer.self_attn, q, k, tgt2, q_freqs=self_freqs, k_freqs=self_freqs)
    tgt = tgt + layer.dropout1(tgt2)
    tgt2 = layer.norm2(tgt)
    tgt2 = rope_attention(
        layer.cross_attn_image,
        tgt2 + query_pos if layer.pos_enc_at_cross_attn_queries else tgt2,
        memory + pos if layer.pos_enc_at_cross_attn_keys else memory,
        memory,
        q_freqs=cross_q_freqs,
        k_freqs=cross_k_freqs,
        num_k_exclude_rope=num_k_exclude_rope,
    )
    tgt = tgt + layer.dropout2(tgt2)
    tgt2 = layer.norm3(tgt)
    tgt2 = layer.linear2(layer.dropout(layer.activation(layer.linear1(tgt2))))
    return tgt + layer.dropout3(tgt2)


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
    rope: RopeTable,
    num_obj_ptr_tokens: int = 0,
) -> torch.Tensor:
    """SAM 2's memory attention over any subset of query tokens and memory tokens.

    Self-attention runs among the given queries only, cross-attention over the given memory
    tokens only; each token rotates with the position of its own grid cell.

    Args:
        module: the model's memory attention (official weights).
        curr, curr_pos: ``[n, B, C]`` query tokens and their sine position embeddings.
        memory, memory_pos: ``[M, B, C_mem]`` memory tokens (spatial first, then
            ``num_obj_ptr_tokens`` object-pointer tokens) and their position embeddings.
        query_cells: ``[B, n]`` grid cell (y * W + x) of each query.
        memory_cells: ``[B, M - num_obj_ptr_tokens]`` grid cell of each spatial memory token.
        grid: ``(H, W)`` of the token grid.
        rope: cache of full-grid rotary frequencies.
        num_obj_ptr_tokens: trailing memory tokens without rotary encoding.

    Returns:
        ``[n, B, C]``: the module's (layer-normed) output for the queries.
    """
    height, width = grid
    device = curr.device
    query_cells = query_cells.long()
    memory_cells = memory_cells.long()
    memory = memory.to(curr.dtype)
    memory_pos = memory_pos.to(curr.dtype)

    output = curr
    if module.pos_enc_at_input and curr_pos is not None:
        output = output + 0.1 * curr_pos
    if module.batch_first:
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)

    # every layer is a clone with the same rotary config: gather each position set once
    gathered: dict[tuple, torch.Tensor] = {}

    def freqs_for(attention: Attention, cells: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(attention, RoPEAttention):
            return None
        key = (tuple(sorted(attention.compute_cis.keywords.items())), id(cells))
        if key not in gathered:
            gathered[key] = rope.grid(attention, height, width, device)[cells]
        return gathered[key]

    for layer in module.layers:
        is_rope_cross = isinstance(layer.cross_attn_image, RoPEAttention)
        output = _memory_attention_layer(
            layer,
            output,
            memory,
            pos=memory_pos,
            query_pos=curr_pos,
            self_freqs=freqs_for(layer.self_attn, query_cells),
            cross_q_freqs=freqs_for(layer.cross_attn_image, query_cells),
            cross_k_freqs=freqs_for(layer.cross_attn_image, memory_cells),
            num_k_exclude_rope=num_obj_ptr_tokens if is_rope_cross else 0,
        )
    normed = module.norm(output)
    return normed.transpose(0, 1) if module.batch_first else normed


def dropped_token_fill(module: OfficialMemoryAttention, curr: torch.Tensor, curr_pos: torch.Tensor) -> torch.Tensor:
    """What memory attention outputs for a token none of whose residual branches contributed:
    ``LayerNorm(curr + 0.1 * curr_pos)`` (``[N, B, C]``)."""
    output = curr + 0.1 * curr_pos if module.pos_enc_at_input else curr
    return module.norm(output)
