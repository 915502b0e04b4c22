"""Configuration dataclasses. This module imports no torch, so the CLI can parse and validate
arguments before the heavy imports happen."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

ScorerName = Literal["router", "prior", "uniform", "random"]
FillMode = Literal["norm", "raw"]
RouterName = Literal["default", "paper", "learned"]
UncertaintyMode = Literal["analytic", "mc"]

SCORERS: tuple[str, ...] = ("router", "prior", "uniform", "random")
FILL_MODES: tuple[str, ...] = ("norm", "raw")
ROUTERS: tuple[str, ...] = ("default", "paper", "learned")
SIGNALS: tuple[str, ...] = ("visual", "text", "uncertainty", "prior")
UNCERTAINTY_MODES: tuple[str, ...] = ("analytic", "mc")
# |seed| bound: seed * 1_000_003 + a frame's index (``frame_seed``) seeds that frame's generator,
# which takes a 64-bit integer (-2**63 to 2**64 - 1)
SEED_LIMIT = 2**43


@dataclass(frozen=True)
class PruningConfig:
    """How tokens are pruned between SAM 2's image encoder and its memory attention.

    Attributes:
        retention: fraction of the frame's stride-16 tokens kept as memory-attention queries and
            written to the memory bank, 0 < retention <= 1. k = ceil(retention * N) tokens.
        scorer: how tokens are ranked: ``router`` (fusion of the ``signals``, see ``router``),
            ``prior`` (the object's previous mask, or the prompt on a prompted frame, dilated
            and pooled to the token grid; ties broken by feature saliency), ``uniform`` (regular
            grid subsampling) or ``random`` (seeded).
        prune_conditioning_frames: also prune the memory of frames that carry user prompts
            (scored on the frame's own mask). Default dense: they are few and anchor identity.
        fill: what dropped positions hold after memory attention: ``norm`` is
            ``LayerNorm(x + 0.1 * pos)``, exactly what SAM 2's memory attention outputs for a
            token whose every residual branch contributed nothing; ``raw`` keeps the encoder
            features unchanged.
        prior_dilation: dilation of the previous mask on the token grid, in tokens.
        seed: seed of the ``random`` scorer (combined with the frame index) and of the
            Monte-Carlo dropout masks, from -2**43 to 2**43 - 1.
        router: fusion of the signals: ``default`` (training-free weighted sum of the
            normalised signals, weights ``signal_weights``), ``paper`` (the source paper's MLP:
            each signal aligned to C channels, concatenated, Linear-GELU-Linear, softmax, whose
            order the logits give without underflow: tokens are ranked by them) or
            ``learned`` (the same MLP over all signals); both MLPs load ``router_weights``.
        signals: the signals used, a subset of visual, text, uncertainty, prior; None: all that
            are available (text only with a ``text``).
        text: description of the target object(s) for the text signal (per-object texts set on a
            session with ``predictor.set_object_text`` take precedence).
        auto_text: the text signal is on and each object's text is set per session (e.g. by the
            automatic prompt pipeline) instead of ``text``.
        aligner: path of the token-to-text projection (``sam2prune fit-aligner``).
        uncertainty: ``analytic`` (closed-form dropout variance, one pass) or ``mc`` (sampled).
        mc_passes: dropout samples in ``mc`` mode (T).
        mc_dropout_p: dropout rate on the query-side input of the uncertainty blocks.
        uncertainty_blocks: Hiera blocks that get the dropout (3-5: on hiera-t these run on the
            same 1/16 grid as memory attention).
        signal_weights: weights of prior, text, uncertainty and visual in the default router.
        router_weights: weights file of the paper/learned router (``sam2prune train-router``).
    """

    retention: float = 0.3
    scorer: ScorerName = "router"
    prune_conditioning_frames: bool = False
    fill: FillMode = "norm"
    prior_dilation: int = 2
    seed: int = 0
    router: RouterName = "default"
    signals: tuple[str, ...] | None = None
    text: str | None = None
    auto_text: bool = False
    aligner: str | None = None
    uncertainty: UncertaintyMode = "analytic"
    mc_passes: int = 5
    mc_dropout_p: float = 0.1
    uncertainty_blocks: tuple[int, ...] = (3, 4, 5)
    signal_weights: tuple[float, float, float, float] = (1.0, 0.5, 0.25, 0.1)
    router_weights: str | None = None

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
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not -SEED_LIMIT <= seed < SEED_LIMIT:
            raise ValueError(
                f"seed must be an integer from {-SEED_LIMIT} to {SEED_LIMIT - 1} (with a frame's index it seeds the "
                f"frame's 64-bit generator), got {seed!r}"
            )
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}; expected one of {', '.join(ROUTERS)}")
        if self.signals is not None:
            unknown = [s for s in self.signals if s not in SIGNALS]
            if unknown or not self.signals:
                raise ValueError(f"signals must be a non-empty subset of {', '.join(SIGNALS)}, got {self.signals!r}")
            if "text" in self.signals and not (self.text or self.auto_text):
                raise ValueError("the text signal needs a text (a description of the target)")
            if self.router == "paper" and "prior" in self.signals:
                raise ValueError("the paper router has no prior input: its signals are visual, text and uncertainty")
        if self.text is not None and not self.text.strip():
            raise ValueError("text must not be empty")
        if self.uncertainty not in UNCERTAINTY_MODES:
            raise ValueError(f"unknown uncertainty mode {self.uncertainty!r}; expected analytic or mc")
        if not isinstance(self.mc_passes, int) or self.mc_passes < 2:
            raise ValueError(f"mc_passes must be an integer >= 2, got {self.mc_passes!r}")
        if not 0.0 <= self.mc_dropout_p < 1.0:
            raise ValueError(f"mc_dropout_p must be in [0, 1), got {self.mc_dropout_p!r}")
        if not self.uncertainty_blocks or any(not isinstance(b, int) or b < 0 for b in self.uncertainty_blocks):
            raise ValueError(f"uncertainty_blocks must be block indices >= 0, got {self.uncertainty_blocks!r}")
        weights = self.signal_weights
        if len(weights) != 4 or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            # (nan >= 0 is False: a NaN weight made every score NaN, an infinite one inverted the ranking)
            raise ValueError(
                "signal_weights must be 4 finite weights >= 0, not all 0 (prior, text, uncertainty, visual), "
                f"got {weights!r}"
            )

    def active_signals(self) -> tuple[str, ...]:
        """The signals the router uses: the configured ones, or all available (text with a
        text; the paper router has no prior)."""
        if self.signals is not None:
            return tuple(s for s in SIGNALS if s in self.signals)
        available = (s for s in SIGNALS if s != "text" or self.text or self.auto_text)
        return tuple(s for s in available if not (s == "prior" and self.router == "paper"))

    def kept_count(self, num_tokens: int) -> int:
        """Number of tokens kept out of ``num_tokens``: ceil(retention * N), at least 1."""
        # round() first so that e.g. 0.3 * 1000 = 300.00000000000006 keeps 300, not 301
        return max(1, min(num_tokens, math.ceil(round(self.retention * num_tokens, 6))))


ROUTER_ONLY_FIELDS: tuple[str, ...] = (
    "router",
    "router_weights",
    "signals",
    "text",
    "auto_text",
    "aligner",
    "uncertainty",
    "mc_passes",
    "mc_dropout_p",
    "uncertainty_blocks",
    "signal_weights",
)


def ineffective_fields(config: PruningConfig, given: Iterable[str]) -> list[str]:
    """The fields among ``given`` (set explicitly by the user) that change nothing with this
    config, e.g. ``router`` with ``scorer="prior"`` or ``mc_passes`` with analytic uncertainty.

    Returns:
        Their names, in the order of ``given``.
    """
    effective = {"retention", "scorer", "prune_conditioning_frames", "fill"}
    if config.scorer == "prior":
        effective.add("prior_dilation")
    elif config.scorer == "random":
        effective.add("seed")
    elif config.scorer == "router":
        signals = config.active_signals()
        effective.update({"router", "signals"})
        effective.add("signal_weights" if config.router == "default" else "router_weights")
        if config.router != "default" and config.router_weights is None:
            effective.add("seed")  # the MLP is initialised randomly (timing runs)
        if "prior" in signals:
            effective.add("prior_dilation")
        if "text" in signals:
            effective.update({"text", "auto_text", "aligner"})
        if "uncertainty" in signals:
            effective.update({"uncertainty", "mc_dropout_p", "uncertainty_blocks"})
            if config.uncertainty == "mc":
                effective.update({"mc_passes", "seed"})
    return [name for name in given if name not in effective]


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

    def __post_init__(self) -> None:
        refine_below = self.refine_below
        if (
            isinstance(refine_below, bool)
            or not isinstance(refine_below, (int, float))
            or not 0.0 <= refine_below <= 1.0
        ):
            raise ValueError(f"refine_below must be a J&F in [0, 1], got {refine_below!r}")
        if (
            isinstance(self.clicks_per_round, bool)
            or not isinstance(self.clicks_per_round, int)
            or self.clicks_per_round < 1
        ):
            raise ValueError(f"clicks_per_round must be an integer >= 1, got {self.clicks_per_round!r}")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int) or self.max_rounds < 0:
            raise ValueError(f"max_rounds must be an integer >= 0, got {self.max_rounds!r}")


@dataclass(frozen=True)
class RayConfig:
    """How ``eval`` and ``sweep`` spread their sequences over Ray workers (the ``ray`` extra).
    A run uses Ray when ``workers`` or ``ray_address`` is set.

    Attributes:
        workers: Ray workers (one model each) that run sequences at the same time; None: without
            ``ray_address``, no Ray (one process); with it, as many as the cluster's resources fit.
        ray_address: address of an existing Ray cluster to join (``ray start --head`` prints it);
            None: the ``RAY_ADDRESS`` environment variable if set, else a local cluster started
            for the run with the resources of ``workers``.
        gpus_per_worker: GPUs each worker holds, fractional allowed (0.5: two workers share a
            GPU); None: 1 on CUDA, 0 on the CPU.
        threads_per_worker: CPU threads (Ray CPUs) each worker holds; None: on a local cluster
            the machine's cores divided among the workers, on an existing cluster 1.
        max_retries: times a failed sequence is run again before it is reported as failed.
    """

    workers: int | None = None
    ray_address: str | None = None
    gpus_per_worker: float | None = None
    threads_per_worker: int | None = None
    max_retries: int = 1

    def __post_init__(self) -> None:
        for name in ("workers", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        gpus = self.gpus_per_worker
        if gpus is not None and (
            isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0
        ):
            raise ValueError(f"gpus_per_worker must be a number >= 0, got {gpus!r}")
        if gpus is not None and gpus > 1 and gpus != int(gpus):
            # Ray's rule: a fraction of one GPU, or whole GPUs
            raise ValueError(f"gpus_per_worker above 1 must be a whole number, got {gpus!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("ray_address must not be empty")

    @property
    def enabled(self) -> bool:
        """The run goes through Ray."""
        return self.workers is not None or self.ray_address is not None
