"""Training the paper/learned router on a dataset with ground-truth masks.

Per token the target is the fraction of its patch inside the object's dilated ground-truth
mask (dilated by one token, so the ring that memory attention needs counts as object). The
signals are those the tracker computes: the visual context, the text relevance of the object's
phrase (with labels and an aligner), the dropout uncertainty, and the prior from the previous
annotated frame's ground-truth mask. Frames with index divisible by ``holdout_every`` are held
out; the report is the recall of object tokens (target > 0.5) among the top ``retention``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from sam2prune.config import PruningConfig
from sam2prune.errors import InputError
from sam2prune.progress import progress as progress_bar
from sam2prune.scoped import seeded
from sam2prune.scorers.baselines import ScoringContext, select_tokens
from sam2prune.scorers.router.fusion import DEFAULT_HIDDEN, RouterScorer, Signals, TextRelevance, build_router_module

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence
    from sam2prune.predictor import PrunedSAM2VideoPredictor


@dataclass
class Example:
    """One object on one frame: its signals and per-token targets ``[N]``."""

    signals: Signals
    target: torch.Tensor
    held_out: bool


def token_targets(mask: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each token's patch inside the mask dilated by one token: ``[H*W]``."""
    radius = max(1, math.ceil(max(mask.shape[0] / grid[0], mask.shape[1] / grid[1])))
    # dilation by a disk of that radius, in linear time: pixels within `radius` of the mask
    dilated = ndimage.distance_transform_edt(~mask) <= radius if mask.any() else mask
    return F.adaptive_avg_pool2d(torch.from_numpy(dilated).float()[None, None], grid).flatten()


def training_scorer(
    predictor: PrunedSAM2VideoPredictor,
    config: PruningConfig,
    signals: tuple[str, ...],
    text_relevance: TextRelevance | None = None,
) -> RouterScorer:
    """A scorer computing ``signals`` for training (each object's phrase comes with its
    examples), with the uncertainty probe attached to the predictor's image encoder if needed."""
    if "uncertainty" in signals and predictor.uncertainty_probe is None:
        predictor.attach_uncertainty(config)
    return RouterScorer(config, signals=signals, text_relevance=text_relevance)


def trained_objects(sequence: Sequence) -> list[int]:
    """The objects of ``sequence`` that ``collect_examples`` makes examples of: those visible on an
    annotated frame that another annotated frame follows (the first gives the prior)."""
    annotated = sorted(sequence.annotated)
    if len(annotated) < 2:
        return []
    return [obj_id for obj_id in sequence.obj_ids if sequence.first_frames[obj_id] <= annotated[-2]]


def collect_examples(
    predictor: PrunedSAM2VideoPredictor,
    sequences: Iterable[Sequence],
    scorer: RouterScorer,
    *,
    phrase_of: Callable[[str, int], str] | None = None,
    holdout_every: int = 5,
    progress: bool = True,
) -> list[Example]:
    """Signals and targets of every object on every annotated frame that follows another
    annotated frame (which gives the prior).

    The examples are kept on the CPU, where ``train_router`` trains, whatever the predictor's
    device: the frame's tokens are copied there once and its signals computed from them. What
    depends on the frame alone (the visual signal, the uncertainty) is computed and held once for
    all its objects.

    Args:
        predictor: a pruned predictor (its ``encode_frames`` gives the uncertainty when its probe is attached).
        scorer: computes the signals (its config decides which).
        phrase_of: ``(sequence name, object id) -> phrase`` for the text signal, or None.
    """
    from sam2prune.predictor.session import FrameCache

    examples = []
    side = predictor.sam_image_embedding_size
    grid = (side, side)
    for sequence in progress_bar(list(sequences), desc="router features", unit="sequence", disable=not progress):
        annotated = sorted(sequence.annotated)
        previous_of = dict(zip(annotated[1:], annotated, strict=False))
        with torch.no_grad():  # not inference mode: the signals become training inputs
            for frame_idx, tokens, uncertainty in predictor.encode_frames(sequence.source, annotated[1:]):
                # on an accelerator, every frame's signals (4 MiB of visual signal at 1024 px) would
                # pile up in its memory, and the router trains on the CPU
                tokens = tokens.cpu()
                uncertainty = uncertainty.cpu() if uncertainty is not None else None
                memo = partial(FrameCache().get, frame_idx)  # this frame's, for all its objects
                previous = previous_of[frame_idx]
                gt, gt_previous = sequence.ground_truth(frame_idx), sequence.ground_truth(previous)
                for obj_id in sequence.obj_ids:
                    if sequence.first_frames[obj_id] > previous:
                        continue
                    prior = torch.from_numpy(np.where(gt_previous == obj_id, 1.0, -1.0)).float()[None, None]
                    context = ScoringContext(
                        frame_idx=frame_idx,
                        grid=grid,
                        prior_mask=prior,
                        uncertainty=uncertainty,
                        text=phrase_of(sequence.name, obj_id) if phrase_of is not None else None,
                        memo=memo,
                    )
                    signals = scorer.signals_for(tokens, context)
                    examples.append(Example(signals, token_targets(gt == obj_id, grid), frame_idx % holdout_every == 0))
    if not examples:
        raise InputError("no training example: the sequences need at least two annotated frames with an object")
    held_out = sum(example.held_out for example in examples)
    if held_out == 0:
        raise InputError(
            f"no held-out example: frames whose index is divisible by --holdout-every {holdout_every} are held out, "
            f"and none of the {len(examples)} examples is; lower --holdout-every or add annotated frames"
        )
    if held_out == len(examples):
        raise InputError(
            f"every one of the {len(examples)} examples is held out (--holdout-every {holdout_every}); "
            "raise --holdout-every or add annotated frames"
        )
    return examples


def _loss(logits: torch.Tensor, target: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    positive = torch.nonzero(target > 0.5).flatten()
    negative = torch.nonzero(target == 0).flatten()
    if not len(positive) or not len(negative):
        return logits.sum() * 0
    pairs = 4 * len(positive)
    pos = positive[torch.randint(len(positive), (pairs,), generator=generator)]
    neg = negative[torch.randint(len(negative), (pairs,), generator=generator)]
    return F.softplus(logits[neg] - logits[pos]).mean()  # pairwise logistic ranking loss


def held_out_recall(module: nn.Module, examples: list[Example], retention: float) -> float:
    """Share of object tokens (target > 0.5) among the top ``retention`` of held-out frames."""
    found = total = 0
    with torch.no_grad():
        for example in examples:
            if not example.held_out:
                continue
            logits = module(example.signals, (1, len(example.target)))
            kept = select_tokens(logits, PruningConfig(retention=retention).kept_count(logits.shape[-1]))[0]
            objects = torch.nonzero(example.target > 0.5).flatten()
            found += int(torch.isin(objects, kept).sum())
            total += len(objects)
    return found / total if total else float("nan")


def train_router(
    examples: list[Example],
    *,
    kind: str,
    channels: int,
    signals: tuple[str, ...],
    epochs: int = 20,
    learning_rate: float = 1e-3,
    loss: str = "bce",
    retention: float = 0.3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train the MLP of the paper or learned router on collected examples, on the CPU.

    Args:
        examples: their signals and targets on the CPU, as ``collect_examples`` keeps them.

    Returns:
        (module in eval mode, history: per epoch the mean training loss and held-out recall).

    Raises:
        InputError: the loss or the weights became NaN or infinite (too large a learning rate).
    """
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):  # seeded initialisation, the caller's RNG untouched
        module = build_router_module(kind, channels, signals, DEFAULT_HIDDEN)
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    training = [e for e in examples if not e.held_out] or examples
    history = []
    bar = progress_bar(range(epochs), desc=f"training {kind} router", unit="epoch", disable=not progress)
    for epoch in bar:
        module.train()
        losses = []
        for index in torch.randperm(len(training), generator=generator).tolist():
            example = training[index]
            logits = module(example.signals, (1, len(example.target)))[0]
            value = _loss(logits, example.target, loss, generator)
            losses.append(value.item())
            if not math.isfinite(losses[-1]):
                raise InputError(
                    f"training diverged: the loss became {losses[-1]} in epoch {epoch + 1} of {epochs} at learning "
                    f"rate {learning_rate:g}; pass a smaller --learning-rate"
                )
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        module.eval()
        if not all(torch.isfinite(parameter).all() for parameter in module.parameters()):
            raise InputError(
                f"training diverged: the router's weights became NaN or infinite in epoch {epoch + 1} of {epochs} at "
                f"learning rate {learning_rate:g}; pass a smaller --learning-rate"
            )
        record = {"loss": float(np.mean(losses)), "held_out_recall": held_out_recall(module, examples, retention)}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", recall=f"{record['held_out_recall']:.3f}")
    return module.eval(), history
