"""Fusing the token signals into one score: the training-free weighted sum, the source paper's
MLP, and the learned MLP; their weight files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from sam2prune.config import PruningConfig
from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write, load_versioned_file
from sam2prune.scoped import seeded
from sam2prune.scorers.prior import prior_scores

if TYPE_CHECKING:
    from sam2prune.scorers.baselines import ScoringContext
    from sam2prune.scorers.router.semantic import Aligner
    from sam2prune.text.encoders import TextEncoder

ROUTER_FORMAT = "sam2prune-router"
ROUTER_VERSION = 1
DEFAULT_HIDDEN = 256


def minmax(values: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row of ``[B, N]`` to [0, 1] (constant rows become 0)."""
    low = values.amin(dim=-1, keepdim=True)
    return (values - low) / (values.amax(dim=-1, keepdim=True) - low).clamp_min(1e-12)


def visual_context(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Each token averaged with its 3x3 neighbourhood: ``[B, N, C]`` -> ``[B, N, C]``."""
    batch, _, channels = tokens.shape
    maps = tokens.transpose(1, 2).reshape(batch, channels, *grid).float()
    pooled = F.avg_pool2d(maps, 3, stride=1, padding=1, count_include_pad=False)
    return pooled.flatten(2).transpose(1, 2)


@dataclass
class Signals:
    """One frame's signals; None where switched off. Shapes ``[B, N, C]`` (visual) or ``[B, N]``."""

    visual: torch.Tensor | None = None
    text: torch.Tensor | None = None
    uncertainty: torch.Tensor | None = None
    prior: torch.Tensor | None = None


def _scalar(value: torch.Tensor | None, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A ``[B, N]`` signal as ``[B, N, 1]`` float (zeros when switched off)."""
    return (value if value is not None else torch.zeros(size, device=device))[..., None].float()


class PaperRouter(nn.Module):
    """The source paper's router: visual, semantic and uncertainty signals each aligned to C
    channels, concatenated (3C), Linear -> GELU -> Linear -> score, softmax over tokens (the
    tokens it keeps are those of the highest logits: ``RouterScorer.fuse``). A switched-off
    signal enters as zeros."""

    kind = "paper"

    def __init__(self, channels: int, hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.channels = channels
        self.hidden = hidden
        self.align_visual = nn.Linear(channels, channels)
        self.align_text = nn.Linear(1, channels)
        self.align_uncertainty = nn.Linear(1, channels)
        self.mlp = nn.Sequential(nn.Linear(3 * channels, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, signals: Signals, size: tuple[int, int]) -> torch.Tensor:
        """Returns logits ``[B, N]`` for ``size`` = (B, N)."""
        device = next(self.parameters()).device
        visual = signals.visual if signals.visual is not None else torch.zeros(*size, self.channels, device=device)
        features = torch.cat(
            [
                self.align_visual(visual.float()),
                self.align_text(_scalar(signals.text, size, device)),
                self.align_uncertainty(_scalar(signals.uncertainty, size, device)),
            ],
            dim=-1,
        )
        return self.mlp(features)[..., 0]


class LearnedRouter(nn.Module):
    """The same 2-layer GELU MLP over all signals it was trained with: the visual context
    (C channels) and the scalar text, uncertainty and prior signals."""

    kind = "learned"

    def __init__(self, channels: int, signals: tuple[str, ...], hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.signals = tuple(signals)
        self.hidden = hidden
        inputs = (channels if "visual" in signals else 0) + sum(s in signals for s in ("text", "uncertainty", "prior"))
        self.mlp = nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, signals: Signals, size: tuple[int, int]) -> torch.Tensor:
        """Returns logits ``[B, N]`` for ``size`` = (B, N)."""
        device = next(self.parameters()).device
        parts = []
        if "visual" in self.signals:
            assert signals.visual is not None  # the scorer computes every signal the router was trained with
            parts.append(signals.visual.float())
        for name in ("text", "uncertainty", "prior"):
            if name in self.signals:
                parts.append(_scalar(getattr(signals, name), size, device))
        return self.mlp(torch.cat(parts, dim=-1))[..., 0]


RouterModule: TypeAlias = PaperRouter | LearnedRouter


def build_router_module(
    kind: str, channels: int, signals: tuple[str, ...], hidden: int = DEFAULT_HIDDEN
) -> RouterModule:
    if kind == "paper":
        return PaperRouter(channels, hidden)
    if kind == "learned":
        return LearnedRouter(channels, signals, hidden)
    raise ValueError(f"router {kind!r} has no weights")


def save_router(
    path: Path, module: RouterModule, *, channels: int, signals: tuple[str, ...], hidden: int, extra: dict | None = None
) -> None:
    payload = {
        "format": ROUTER_FORMAT,
        "version": ROUTER_VERSION,
        "router": module.kind,
        "channels": channels,
        "hidden": hidden,
        "signals": list(signals),
        "state_dict": module.state_dict(),
        "extra": extra or {},
    }
    atomic_write(path, lambda temp: torch.save(payload, temp))


def load_router(path: str | Path, *, kind: str, channels: int) -> tuple[RouterModule, tuple[str, ...], dict]:
    """Load router weights strictly (format, version, kind, channels and every tensor, finite).

    Returns:
        (the module in eval mode, the signals it was trained with, extra information).

    Raises:
        InputError: naming the file and the mismatch.
    """
    path = Path(path)
    payload = load_versioned_file(
        path,
        kind="router",
        file_format=ROUTER_FORMAT,
        version=ROUTER_VERSION,
        hint="train one with `sam2prune train-router`",
    )
    if payload.get("router") != kind:
        raise InputError(f"router weights {path} are for the {payload.get('router')!r} router, not {kind!r}")
    if payload.get("channels") != channels:
        raise InputError(
            f"router weights {path} expect {payload.get('channels')}-channel tokens; this model has {channels}"
        )
    signals = tuple(payload["signals"])
    module = build_router_module(kind, channels, signals, int(payload["hidden"]))
    try:
        module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise InputError(f"router weights {path} do not fit the {kind} router: {error}") from error
    broken = [name for name, tensor in module.state_dict().items() if not torch.isfinite(tensor).all()]
    if broken:
        raise InputError(
            f"router weights {path}: {', '.join(broken)} {'holds' if len(broken) == 1 else 'hold'} NaN or infinite "
            "values, expected finite ones; retrain with `sam2prune train-router` and a smaller --learning-rate"
        )
    return module.eval(), signals, payload.get("extra", {})


class TextRelevance(Protocol):
    """The text signal in two steps: a projection of the frame's tokens (the same for every
    object of the frame) and the relevance of projected tokens to one object's text."""

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, N, D]``."""
        ...

    def relevance(self, projected: torch.Tensor, text: str) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N]``."""
        ...


class RouterScorer:
    """Token scorer that computes the configured signals and fuses them.

    Each signal has its own method, so that a benchmark can time them by wrapping them.

    Args:
        config: the pruning config (router kind, signals, weights of the default fusion).
        text_relevance: computes the text signal, or None when it is off.
        module: the paper/learned MLP, or None for the default fusion.
    """

    def __init__(
        self,
        config: PruningConfig,
        *,
        signals: tuple[str, ...],
        text_relevance: TextRelevance | None = None,
        module: RouterModule | None = None,
    ) -> None:
        self.config = config
        self.signals = signals
        self.text_relevance = text_relevance
        self.module = module
        self.needs_prior = "prior" in signals

    def visual_signal(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        """``[B, N, C]`` each token's 3x3 neighbourhood (once per frame: ``context.memo``)."""
        return context.memo(
            ("visual context", tuple(tokens.shape), tokens.dtype), lambda: visual_context(tokens, context.grid)
        )

    def text_signal(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        """``[B, N]`` relevance of each token to the object's text."""
        if not context.text:
            raise InputError(
                f"the text signal is on but frame {context.frame_idx}'s object has no text: pass --text, "
                "--auto-text, or set one with predictor.set_object_text"
            )
        text_relevance = self.text_relevance
        assert text_relevance is not None  # given with the text signal (build_router_scorer, train-router)
        projected = context.memo(
            ("text projection", text_relevance, tuple(tokens.shape), tokens.dtype),
            lambda: text_relevance.project(tokens),
        )
        return text_relevance.relevance(projected, context.text)

    def prior_signal(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        """``[B, N]`` in [0, 1]: inside the dilated previous mask 1, its ring 0.5, elsewhere 0."""
        if context.prior_mask is None:
            raise ValueError("the prior signal needs a prior mask")
        # 0..2 (inside, ring) -> 0..1
        return prior_scores(context.prior_mask.to(tokens.device), context.grid, dilation=self.config.prior_dilation) / 2

    def signals_for(self, tokens: torch.Tensor, context: ScoringContext) -> Signals:
        signals = Signals()
        if "visual" in self.signals:
            signals.visual = self.visual_signal(tokens, context)
        if "text" in self.signals:
            signals.text = self.text_signal(tokens, context)
        if "uncertainty" in self.signals:
            if context.uncertainty is None:
                raise RuntimeError("the uncertainty signal is on but the image encoder gave no uncertainty")
            signals.uncertainty = context.uncertainty.to(tokens.device)
        if "prior" in self.signals:
            signals.prior = self.prior_signal(tokens, context)
        return signals

    def _module_on(self, device: torch.device) -> RouterModule:
        # the MLP is built or loaded on the CPU; it follows the tokens (and a predictor moved later)
        module = self.module
        assert module is not None  # fuse calls this only with a module
        if next(module.parameters()).device != device:
            module = self.module = module.to(device)
        return module

    def fuse(self, signals: Signals, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``[B, N]`` scores of ``size`` = (B, N) from the signals: the MLP's logits, or the
        weighted sum of the default router."""
        if self.module is not None:
            # the paper's softmax over tokens keeps the order of the logits, which are ranked
            # instead: in float32 it underflows to ties at 0 once the logits spread over ~104
            return self._module_on(device)(signals, size)
        w_prior, w_text, w_uncertainty, w_visual = self.config.signal_weights
        score = torch.zeros(size, device=device)
        if signals.prior is not None:
            score = score + w_prior * signals.prior
        if signals.text is not None:
            score = score + w_text * minmax(signals.text)
        if signals.uncertainty is not None:
            score = score + w_uncertainty * signals.uncertainty
        if signals.visual is not None:
            score = score + w_visual * minmax(signals.visual.norm(dim=-1))
        return score

    def __call__(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        return self.fuse(self.signals_for(tokens, context), (tokens.shape[0], tokens.shape[1]), tokens.device)


class AlignedTextRelevance:
    """cos(P v_i, e(text)) with the aligner P.

    ``project`` (P v_i) depends on the frame alone: the router computes it once per frame for
    all objects. Text embeddings are computed once per text; the aligner and each embedding are
    copied to a device once, not per frame.
    """

    def __init__(self, aligner: Aligner, encoder: TextEncoder) -> None:
        self.aligner, self.encoder = aligner, encoder
        self._embeddings: dict[str, torch.Tensor] = {}  # as the encoder gives them
        self._aligners: dict[torch.device, Aligner] = {}
        self._device_embeddings: dict[tuple[str, torch.device], torch.Tensor] = {}

    def embedding(self, text: str) -> torch.Tensor:
        if text not in self._embeddings:
            embedding = self.encoder.encode([text])[0]
            if embedding.shape[-1] != self.aligner.weight.shape[1]:
                raise InputError(
                    f"text encoder {self.encoder.name} gives {embedding.shape[-1]}-d embeddings; the aligner maps to "
                    f"{self.aligner.weight.shape[1]}"
                )
            self._embeddings[text] = embedding
        return self._embeddings[text]

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` tokens -> ``[B, N, D]`` in text space (the aligner on their device)."""
        aligner = self._aligners.get(tokens.device)
        if aligner is None:
            aligner = self._aligners[tokens.device] = self.aligner.to(tokens.device)
        return aligner.project(tokens)

    def relevance(self, projected: torch.Tensor, text: str) -> torch.Tensor:
        """``[B, N]`` cosine of projected tokens ``[B, N, D]`` to the text's embedding."""
        from sam2prune.scorers.router.semantic import cosine_relevance

        key = (text, projected.device)
        embedding = self._device_embeddings.get(key)
        if embedding is None:
            embedding = self._device_embeddings[key] = self.embedding(text).to(projected.device)
        return cosine_relevance(projected, embedding)

    def __call__(self, tokens: torch.Tensor, text: str) -> torch.Tensor:
        """``[B, N]`` relevance of tokens ``[B, N, C]`` to ``text``."""
        return self.relevance(self.project(tokens), text)


def load_aligner_for(
    path: str | Path,
    *,
    channels: int,
    model_name: str,
    image_size: int,
    random_weights: bool,
    log: Callable[[str], None] = print,
) -> Aligner:
    """An aligner file, checked against the model whose tokens it will project.

    Args:
        random_weights: the model has random weights (an aligner fit on random weights fits
            only such a model).

    Raises:
        InputError: the file is not an aligner, or was fit on another model's tokens (channels,
            model name), or on random weights for a model with real ones. Another image size is
            only logged.
    """
    from sam2prune.scorers.router.semantic import Aligner

    aligner = Aligner.load(path)
    if aligner.weight.shape[0] != channels + 1:
        raise InputError(f"aligner {path} maps {aligner.weight.shape[0] - 1}-channel tokens; this model has {channels}")
    if aligner.model != model_name:
        raise InputError(f"aligner {path} was fit on {aligner.model} tokens; this model is {model_name}")
    if aligner.random_weights and not random_weights:
        raise InputError(
            f"aligner {path} was fit on the tokens of {aligner.model} with random weights, which say nothing of "
            "this model's real ones: fit one with `sam2prune fit-aligner --checkpoint ...`"
        )
    if aligner.image_size != image_size:
        log(f"aligner {path} was fit at {aligner.image_size} px; the model runs at {image_size} px")
    return aligner


def _check_trained_model(
    path: str, extra: dict, *, model_name: str, image_size: int, random_weights: bool, log: Callable[[str], None]
) -> None:
    """Refuse router weights trained on another model's tokens, or on random weights for a model
    with real ones, as an aligner is (``load_aligner_for``); another image size is only logged.
    Files that do not record one of these (trained before they were recorded) pass it."""
    trained_on = extra.get("model")
    if trained_on is not None and trained_on != model_name:
        raise InputError(f"router weights {path} were trained on {trained_on} tokens; this model is {model_name}")
    if extra.get("random_weights") and not random_weights:
        raise InputError(
            f"router weights {path} were trained on the tokens of {trained_on} with random weights, which say "
            "nothing of this model's real ones: train them with `sam2prune train-router --checkpoint ...`"
        )
    trained_size = extra.get("image_size")
    if trained_size is not None and trained_size != image_size:
        log(f"router weights {path} were trained at {trained_size} px; the model runs at {image_size} px")


def _refuse_other_signals(path: str, trained: tuple[str, ...], active: tuple[str, ...]) -> None:
    """Refuse router weights trained with other signals than those of the run: the learned MLP
    would not fit them, and the paper MLP, which has an input for every signal, would read zeros
    where it was trained on a signal (or a signal where it was trained on zeros)."""
    if set(trained) == set(active):
        return
    hint = f"pass --signals {','.join(trained)}"
    if "text" in trained and "text" not in active:
        hint += " with --text PHRASE (or --auto-text) and --aligner ALIGNER.pt"
    raise InputError(
        f"router weights {path} were trained with the signals {','.join(trained)}, this run uses "
        f"{','.join(active)}; {hint}"
    )


def build_router_scorer(
    config: PruningConfig,
    *,
    channels: int,
    model_name: str,
    image_size: int,
    random_router: bool,
    log: Callable[[str], None] = print,
) -> RouterScorer:
    """Assemble the router a config asks for: load the aligner and text encoder for the text
    signal, and the MLP weights for the paper/learned routers.

    Args:
        random_router: SAM 2 has random weights (for timing): without ``router_weights``,
            initialise the paper/learned MLP randomly (seeded) instead of failing; and accept an
            aligner fit on random weights (refused for real ones).

    Raises:
        InputError: text without an aligner, a mismatched aligner (model, channels, or fit on
            random weights for a model with real ones), missing router weights, or weights trained
            with other signals than the config's, on another model, or on random weights for a
            model with real ones.
    """
    from sam2prune.text.encoders import load_text_encoder

    signals = config.active_signals()
    text_relevance = None
    if "text" in signals:
        if config.aligner is None:
            raise InputError(
                "the text signal needs an aligner: pass --aligner ALIGNER.pt (fit one with `sam2prune fit-aligner` "
                "on a dataset with object phrases); a text alone cannot be compared with SAM 2's tokens"
            )
        aligner = load_aligner_for(
            config.aligner,
            channels=channels,
            model_name=model_name,
            image_size=image_size,
            random_weights=random_router,
            log=log,
        )
        text_relevance = AlignedTextRelevance(aligner, load_text_encoder(aligner.text_encoder))
        if config.text:
            text_relevance.embedding(config.text)  # fail now, not on the first frame

    module = None
    if config.router in ("paper", "learned"):
        if config.router_weights is not None:
            module, trained_signals, extra = load_router(config.router_weights, kind=config.router, channels=channels)
            _refuse_other_signals(config.router_weights, trained_signals, signals)
            _check_trained_model(
                config.router_weights,
                extra,
                model_name=model_name,
                image_size=image_size,
                random_weights=random_router,
                log=log,
            )
        elif random_router:
            with seeded(config.seed):  # without touching the caller's RNG
                module = build_router_module(config.router, channels, signals).eval()
            log(
                f"no --router-weights: the {config.router} router has RANDOM weights (timings are real, rankings are not)"
            )
        else:
            raise InputError(
                f"the {config.router} router needs --router-weights FILE (train one with `sam2prune train-router "
                f"--router {config.router}`)"
            )
    return RouterScorer(config, signals=signals, text_relevance=text_relevance, module=module)
