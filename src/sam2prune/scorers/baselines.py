"""Token scorers needing no trained weights, and the top-k selection they feed."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import torch

from sam2prune.config import PruningConfig
from sam2prune.scorers.prior import prior_scores

# Saliency only breaks ties of the prior: it is far below the prior's smallest step.
SALIENCY_WEIGHT = 1e-3


Memo = Callable[[Hashable, Callable[[], torch.Tensor]], torch.Tensor]


def compute_every_time(key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The memo of a context without a session: nothing is kept."""
    return compute()


@dataclass
class ScoringContext:
    """What a scorer may look at besides the tokens.

    Attributes:
        frame_idx: index of the frame being scored.
        grid: ``(H, W)`` of the token grid.
        prior_mask: ``[B, 1, h, w]`` logits of where the object is believed to be (the previous
            frame's mask, or the prompt/own mask on a prompted frame), or None if unknown.
        uncertainty: ``[B, N]`` dropout uncertainty of the frame's tokens in [0, 1], or None.
        text: the description of the object being scored (its own, else the config's), or None.
        memo: ``memo(key, compute)`` gives what depends on the frame's tokens alone, computed
            once per frame for all its objects (the session's ``FrameCache``); the key must say
            what is computed and from what.
    """

    frame_idx: int
    grid: tuple[int, int]
    prior_mask: torch.Tensor | None = None
    uncertainty: torch.Tensor | None = None
    text: str | None = None
    memo: Memo = compute_every_time


class TokenScorer(Protocol):
    """Scores a frame's tokens; higher is kept first."""

    needs_prior: bool

    def __call__(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        """Args: tokens ``[B, N, C]``. Returns: scores ``[B, N]``."""
        ...


def select_tokens(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """Indices of the ``kept`` highest scores per row, in ascending (grid) order.

    Args:
        scores: ``[B, N]``.
        kept: k, 1 <= k <= N.

    Returns:
        ``[B, k]`` int64, sorted ascending.
    """
    if not 1 <= kept <= scores.shape[-1]:
        raise ValueError(f"cannot keep {kept} of {scores.shape[-1]} tokens")
    return torch.topk(scores, kept, dim=-1, sorted=False).indices.sort(dim=-1).values


def feature_saliency(tokens: torch.Tensor) -> torch.Tensor:
    """Token feature norm, min-max normalised per frame to [0, 1] (``[B, N, C]`` -> ``[B, N]``)."""
    norms = tokens.float().norm(dim=-1)
    low = norms.amin(dim=-1, keepdim=True)
    span = (norms.amax(dim=-1, keepdim=True) - low).clamp_min(1e-12)
    return (norms - low) / span


class PriorScorer:
    """Where the object was (dilated), ties broken by feature saliency."""

    needs_prior = True

    def __init__(self, dilation: int) -> None:
        self.dilation = dilation

    def __call__(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        if context.prior_mask is None:
            raise ValueError("the prior scorer needs a prior mask")
        prior = prior_scores(context.prior_mask.to(tokens.device), context.grid, dilation=self.dilation)
        saliency = context.memo(("saliency", tuple(tokens.shape)), lambda: feature_saliency(tokens))
        return prior + SALIENCY_WEIGHT * saliency


def ordered_dither(height: int, width: int) -> torch.Tensor:
    """Bayer ordered-dither thresholds of an H x W grid, ``[H*W]`` in [0, 1).

    Keeping the cells with the lowest thresholds spreads any number of them evenly over the
    grid: a quarter of a power-of-two grid is every other row and column.
    """
    bits = max(1, math.ceil(math.log2(max(height, width))))
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    value = torch.zeros(height, width, dtype=torch.int64)
    bayer = torch.tensor([[0, 2], [3, 1]])
    for level in range(bits):
        value = value + bayer[(ys >> level) & 1, (xs >> level) & 1] * 4 ** (bits - 1 - level)
    return (value.float() / 4**bits).flatten()


class UniformScorer:
    """Regular grid subsampling (ordered dither), the same cells on every frame.

    The pattern is a constant of the grid: it is built once per grid and device (on the CPU,
    then copied once), never per frame.
    """

    needs_prior = False

    def __init__(self) -> None:
        self._patterns: dict[tuple[tuple[int, int], torch.device], torch.Tensor] = {}

    def pattern(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``[H*W]`` scores of the grid's cells (negated dither thresholds) on ``device``."""
        height, width = grid
        key = ((height, width), device)
        if key not in self._patterns:
            self._patterns[key] = (-ordered_dither(*grid)).to(device)
        return self._patterns[key]

    def __call__(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        return self.pattern(context.grid, tokens.device).expand(tokens.shape[0], -1)


def frame_seed(seed: int, frame_idx: int) -> int:
    """The seed of what is drawn at random for frame ``frame_idx`` (random scores, dropout
    masks): reproducible from ``seed`` and the frame alone, in any order of frames."""
    return seed * 1_000_003 + frame_idx


class RandomScorer:
    """Uniformly random tokens, reproducible from the seed and the frame index.

    The scores are drawn on the tokens' device by a generator of that device, seeded per frame
    (``frame_seed``): nothing is drawn on the host and copied per frame. A
    device's generator has its own stream (CUDA's Philox differs from the CPU's Mersenne
    twister), so the kept cells depend on the device, reproducibly; on the CPU they are those
    of sam2prune 0.1.0.
    """

    needs_prior = False

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, frame_idx: int, device: torch.device) -> torch.Generator:
        """The device's generator, seeded for ``frame_idx`` (seeding is host-side state only)."""
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        return generator.manual_seed(frame_seed(self.seed, frame_idx))

    def __call__(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        generator = self.generator(context.frame_idx, tokens.device)
        return torch.rand(tokens.shape[0], tokens.shape[1], generator=generator, device=tokens.device)


def make_scorer(config: PruningConfig) -> TokenScorer:
    """The scorers that need nothing but the config (``router`` is built by the predictor)."""
    if config.scorer == "prior":
        return PriorScorer(config.prior_dilation)
    if config.scorer == "uniform":
        return UniformScorer()
    if config.scorer == "random":
        return RandomScorer(config.seed)
    raise ValueError(f"unknown scorer {config.scorer!r}")
