"""Monte-Carlo-dropout uncertainty of Hiera's attention logits, sampled or in closed form.

Dropout with rate p (inverted: kept values scaled by 1/(1-p)) is put on the query-side input x
of the attention of the chosen Hiera blocks (SAM 2 itself has no dropout there); keys and values
stay as computed. A token's uncertainty is the variance of its pre-softmax attention logits
under that dropout, averaged over its keys, heads and blocks; the signal is its square root (a
standard deviation), min-max normalised over the frame.

``mc`` (the source paper): sample T dropout masks and take the empirical (unbiased) variance.
Only the query projection and the logits depend on the mask, so the clean forward pass runs
once and the T passes are batched over exactly that.

``analytic`` (default): the same expectation in closed form. For logit l_ij = s * q_i . k_j
with q_i = W_q x~_i + b and x~_ic = x_ic m_c / (1-p):
    Var(l_ij) = s^2 p/(1-p) * sum_c x_ic^2 (W_q^T k_j)_c^2,
and its mean over the keys j of the token's window is
    s^2 p/(1-p) * sum_c x_ic^2 * mean_j (W_q^T k_j)_c^2,
one matrix-vector product per head and window instead of T sampled passes.

A block that max-pools its queries (the first block of a stage) has no closed form through the
max; there, in both modes, a token's variance is that of the logits of the queries it pools over
(before pooling), averaged over its pooling window. Both modes thus measure the same quantity,
and ``analytic`` is exactly the expectation that ``mc`` samples.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import Hiera, MultiScaleBlock
from sam2.modeling.backbones.utils import window_unpartition
from torch import nn
from torch.utils.hooks import RemovableHandle

from sam2prune.errors import InputError
from sam2prune.scoped import scoped
from sam2prune.scorers.baselines import frame_seed


def analytic_logit_variance(
    x: torch.Tensor, k: torch.Tensor, w_q: torch.Tensor, *, p: float, scale: float
) -> torch.Tensor:
    """Mean over keys of Var(logit) under dropout on the query-side input, in closed form.

    Args:
        x: ``[B, n, C]`` query-side input of the attention (per window).
        k: ``[B, heads, n_k, d]`` keys.
        w_q: ``[heads, d, C]`` query projection.
        p: dropout rate; scale: the logit scale (1/sqrt(d)).

    Returns:
        ``[B, heads, n]``.
    """
    projected = torch.einsum("bhnd,hdc->bhnc", k, w_q)  # (W_q^T k_j) for every key
    mean_square = projected.square().mean(dim=2)  # [B, heads, C]
    return (scale**2 * p / (1 - p)) * torch.einsum("bnc,bhc->bhn", x.square(), mean_square)


def sampled_logit_variance(
    x: torch.Tensor,
    k: torch.Tensor,
    w_q: torch.Tensor,
    b_q: torch.Tensor,
    *,
    p: float,
    scale: float,
    passes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Mean over keys of the empirical (unbiased) variance of the logits over T dropout masks.

    The T sets of logits are never materialised: with l_tj - mean_t l_j = (q_t - mean q) . k_j,
    the mean over keys j of the squared deviations is the quadratic form of the deviations with
    the keys' Gram matrix K^T K / n_k, so a pass costs O(n d^2) instead of O(n n_k d). This is
    the same sample variance as computing every logit (``explicit_sampled_logit_variance``).

    Args:
        x: ``[B, n, C]``; k: ``[B, heads, n_k, d]``; w_q: ``[heads, d, C]``; b_q: ``[heads, d]``.
        generator: a generator of x's device (the dropout masks are drawn there).

    Returns:
        ``[B, heads, n]``.
    """
    if p == 0:  # no dropout, no variance (exactly, not up to rounding)
        return x.new_zeros(x.shape[0], w_q.shape[0], x.shape[1])
    q = _sampled_queries(x, w_q, b_q, p=p, passes=passes, generator=generator)  # [T, B, heads, n, d]
    deviation = q - q.mean(dim=0, keepdim=True)
    gram = torch.einsum("bhkd,bhke->bhde", k, k) / k.shape[2]
    squares = torch.einsum("tbhnd,bhde,tbhne->bhn", deviation, gram, deviation)
    return scale**2 * squares / (passes - 1)


def explicit_sampled_logit_variance(
    x: torch.Tensor,
    k: torch.Tensor,
    w_q: torch.Tensor,
    b_q: torch.Tensor,
    *,
    p: float,
    scale: float,
    passes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The same as ``sampled_logit_variance`` computed literally (every logit of every pass);
    a reference for tests, O(T n n_k d)."""
    q = _sampled_queries(x, w_q, b_q, p=p, passes=passes, generator=generator)
    logits = scale * torch.einsum("tbhqd,bhkd->tbhqk", q, k)
    return logits.var(dim=0, unbiased=True).mean(dim=-1)


def _sampled_queries(
    x: torch.Tensor,
    w_q: torch.Tensor,
    b_q: torch.Tensor,
    *,
    p: float,
    passes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Queries under T inverted-dropout masks on x: ``[T, B, heads, n, d]``.

    The masks are drawn on x's device by ``generator``, which must be a generator of that
    device: at 1024 px with T = 5 they are ~126 MB per frame, which drawing on the host and
    copying would move every frame.
    """
    batch, n, channels = x.shape
    keep = torch.rand((passes, batch, n, channels), generator=generator, device=x.device) >= p
    dropped = x[None] * keep / (1 - p)
    return (torch.einsum("tbnc,hdc->tbnhd", dropped, w_q) + b_q).permute(0, 1, 3, 2, 4)


class UncertaintyCollection:
    """The per-block variance maps one forward pass of the image encoder produced."""

    def __init__(self) -> None:
        self.variances: list[torch.Tensor] = []  # [B, H_b, W_b] per hooked block

    def signal(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """The signal on the token grid, ``[B, H*W]`` in [0, 1] (std, min-max normalised per
        frame); None if no hooked block ran."""
        if not self.variances:
            return None
        maps = [
            F.interpolate(v[:, None], size=grid, mode="area")[:, 0] if tuple(v.shape[-2:]) != grid else v
            for v in self.variances
        ]
        std = torch.stack(maps).mean(dim=0).clamp_min(0).sqrt().flatten(1)
        low = std.amin(dim=1, keepdim=True)
        return (std - low) / (std.amax(dim=1, keepdim=True) - low).clamp_min(1e-12)


_COLLECTION: ContextVar[UncertaintyCollection | None] = ContextVar("sam2prune_uncertainty", default=None)


class UncertaintyProbe:
    """Attached to Hiera blocks by forward hooks, it computes the per-token logit variance of
    the encoder passes run inside ``collect()``, on the block outputs' grids.

    Hooks read the attention's input and its qkv projection output: nothing is recomputed in
    ``analytic`` mode, and the model's outputs are unchanged. Outside ``collect()`` the hooks
    do nothing, so the probe holds no per-pass state.
    """

    def __init__(
        self,
        trunk: Hiera,
        blocks: tuple[int, ...],
        *,
        mode: str,
        p: float,
        passes: int,
        seed: int,
    ) -> None:
        if max(blocks) >= len(trunk.blocks):
            raise InputError(
                f"--uncertainty-blocks: block {max(blocks)} does not exist: this Hiera has {len(trunk.blocks)} blocks (0..{len(trunk.blocks) - 1})"
            )
        self.mode, self.p, self.passes, self.seed = mode, p, passes, seed
        self.blocks = tuple(blocks)
        # dropout masks of the ``mc`` mode: one private stream per probe and device, seeded for
        # each frame encoded (``seed_for``; before any, with ``seed``)
        self._generators: dict[torch.device, torch.Generator] = {}
        self._stream_seed = seed
        self._input_hw: dict[int, tuple[int, int]] = {}  # block input grid, written by its own pre-hook
        self._handles: list[RemovableHandle] = []
        for index in blocks:
            block = trunk.blocks[index]
            self._handles.append(block.register_forward_pre_hook(self._remember_input(index)))
            self._handles.append(block.attn.qkv.register_forward_hook(self._measure(index, block)))

    def seed_for(self, frame_idx: int) -> None:
        """Draw the masks of the next encoder passes from streams seeded for ``frame_idx``
        (``frame_seed``): a frame's uncertainty is then the same whenever it is encoded, first or
        again (a click on it, a frame bounded memory tracks again), in any order of frames and
        videos (in one process, or on another worker). Seeding is host-side state only."""
        self._stream_seed = frame_seed(self.seed, frame_idx)
        for generator in self._generators.values():
            generator.manual_seed(self._stream_seed)

    def generator(self, device: torch.device) -> torch.Generator:
        """The probe's dropout-mask generator on ``device``."""
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device).manual_seed(self._stream_seed)
        return generator

    @property
    def capturable(self) -> bool:
        """Its computation can be captured in a CUDA graph (``analytic``: no random masks)."""
        return self.mode == "analytic" or self.p == 0

    @property
    def signature(self) -> tuple:
        """What fixes the computation its hooks add to the encoder."""
        return (self.blocks, self.mode, self.p, self.passes)

    def extend(self, variances: list[torch.Tensor]) -> None:
        """Add the variance maps of an encoder pass measured elsewhere (in a ``collect()`` of its
        own, as a static encoder does) to the collection being gathered, if any."""
        collection = _COLLECTION.get()
        if collection is not None:
            collection.variances.extend(variances)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def collect(self) -> AbstractContextManager[UncertaintyCollection]:
        """Measure the encoder passes run inside the block."""
        return scoped(_COLLECTION, UncertaintyCollection())

    def _remember_input(self, index: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self._input_hw[index] = (inputs[0].shape[1], inputs[0].shape[2])

        return hook

    def _measure(
        self, index: int, block: MultiScaleBlock
    ) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            collection = _COLLECTION.get()
            if collection is not None:
                collection.variances.append(self.block_variance(index, block, inputs[0], output))

        return hook

    def block_variance(self, index: int, block: MultiScaleBlock, x: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
        """``[B, H_out, W_out]`` variance map of one block (x: ``[B', h, w, C]`` attention input)."""
        attn = block.attn
        windows, h, w, channels = x.shape
        heads, dim_out = attn.num_heads, attn.dim_out
        head_dim = dim_out // heads
        scale = head_dim**-0.5
        flat = x.reshape(windows, h * w, channels).float()
        k = qkv.reshape(windows, h * w, 3, heads, head_dim)[:, :, 1].transpose(1, 2).float()  # [B', heads, n, d]
        w_q = attn.qkv.weight[:dim_out].reshape(heads, head_dim, channels).float()
        if self.mode == "analytic" or self.p == 0:
            variance = analytic_logit_variance(flat, k, w_q, p=self.p, scale=scale)
        else:
            b_q = attn.qkv.bias[:dim_out].reshape(heads, head_dim).float()
            variance = sampled_logit_variance(
                flat, k, w_q, b_q, p=self.p, scale=scale, passes=self.passes, generator=self.generator(flat.device)
            )
        variance = variance.mean(dim=1).reshape(windows, 1, h, w)
        if attn.q_pool is not None:  # the queries a token pools over: average their variance
            variance = F.avg_pool2d(variance, attn.q_pool.kernel_size, attn.q_pool.stride)
        return self._to_grid(index, block, variance)

    def _to_grid(self, index: int, block: MultiScaleBlock, variance: torch.Tensor) -> torch.Tensor:
        """Undo Hiera's window partition, as ``MultiScaleBlock.forward`` does for its output."""
        height, width = self._input_hw[index]
        window = block.window_size
        if block.q_stride:
            height, width = height // block.q_stride[0], width // block.q_stride[1]
            window = window // block.q_stride[0]
        variance = variance.permute(0, 2, 3, 1)  # [B', h, w, 1]
        if block.window_size > 0:
            padded = (height + (-height) % window, width + (-width) % window)
            variance = window_unpartition(variance, window, padded, (height, width))
        return variance[..., 0]
