"""Configuration dataclasses. This module imports no torch, so the CLI can parse and validate
arguments before the heavy imports happen."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ScorerName = Literal["prior", "uniform", "random"]
FillMode = Literal["norm", "raw"]

SCORERS: tuple[str, ...] = ("prior", "uniform", "random")
FILL_MODES: tuple[str, ...] = ("norm", "raw")


@dataclass(frozen=True)
class PruningConfig:
    """How tokens are pruned between SAM 2's image encoder and its memory attention.

    Attributes:
        retention: fraction of the frame's stride-16 tokens kept as memory-attention queries and
            written to the memory bank, 0 < retention <= 1. k = ceil(retention * N) tokens.
        scorer: how tokens are ranked: ``prior`` (the object's previous mask, or the prompt on a
            prompted frame, dilated and pooled to the token grid; ties broken by feature
            saliency), ``uniform`` (regular grid subsampling) or ``random`` (seeded).
        prune_conditioning_frames: also prune the memory of frames that carry user prompts
            (scored on the frame's own mask). Default dense: they are few and anchor identity.
        fill: what dropped positions hold after memory attention: ``norm`` is
            ``LayerNorm(x + 0.1 * pos)``, exactly what SAM 2's memory attention outputs for a
            token whose every residual branch contributed nothing; ``raw`` keeps the encoder
            features unchanged.
        prior_dilation: dilation of the previous mask on the token grid, in tokens.
        seed: seed of the ``random`` scorer (combined with the frame index).
    """

    retention: float = 0.3
    scorer: ScorerName = "prior"
    prune_conditioning_frames: bool = False
    fill: FillMode = "norm"
    prior_dilation: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        retention = self.retention
        if isinstance(retention, bool) or not isinstance(retention, (int, float)):
            raise ValueError(f"retention must be a number in (0, 1], got {retention!r}")
        if not math.isfinite(retention) or not 0.0 < retention <= 1.0:
            raise ValueError(f"retention must be in (0, 1], got {retention!r}")
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; expected one of {', '.join(SCORERS)}")
        if self.fill not in FILL_MODES:
            raise ValueError(f"unknown fill {self.fill!r}; expected one of {', '.join(FILL_MODES)}")
        if not isinstance(self.prior_dilation, int) or self.prior_dilation < 0:
            raise ValueError(f"prior_dilation must be an integer >= 0, got {self.prior_dilation!r}")

    def kept_count(self, num_tokens: int) -> int:
        """Number of tokens kept out of ``num_tokens``: ceil(retention * N), at least 1."""
        # round() first so that e.g. 0.3 * 1000 = 300.00000000000006 keeps 300, not 301
        return max(1, min(num_tokens, math.ceil(round(self.retention * num_tokens, 6))))


@dataclass(frozen=True)
class ProtocolConfig:
    """Interactive protocol of the source paper.

    Attributes:
        refine_below: a frame whose J&F for an object is below this gets corrective clicks.
        clicks_per_round: corrective clicks added per round (on the worst frame and object).
        max_rounds: refinement rounds per sequence at most.
    """

    refine_below: float = 0.8
    clicks_per_round: int = 3
    max_rounds: int = 10
