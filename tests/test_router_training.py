"""Training the paper/learned router: where its examples are kept, what they share, and how the
trained MLP ranks tokens at inference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sam2prune import PruningConfig
from sam2prune.data.datasets import read_dataset
from sam2prune.scorers.baselines import ScoringContext, select_tokens
from sam2prune.scorers.router import fusion
from sam2prune.scorers.router.fusion import RouterScorer, Signals
from sam2prune.scorers.router.train import collect_examples, train_router, training_scorer

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TEST_DEVICE, TINY_SIZE, build_random

SIGNALS = ("visual", "uncertainty", "prior")


@pytest.fixture
def two_objects(tmp_path) -> Path:
    """The chair clip as a DAVIS root with two objects: the chair's left and right halves."""
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    masks = root / "Annotations" / "480p" / "chair"
    masks.mkdir(parents=True)
    for path in sorted(CHAIR_MASKS.glob("*.png")):
        labels = np.array(Image.open(path))
        right = np.arange(labels.shape[1])[None] >= int(np.median(np.nonzero(labels == 1)[1]))
        image = Image.fromarray(np.where((labels == 1) & right, 2, labels).astype(np.uint8), "P")
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
        image.save(masks / path.name)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    return root


class _OnAnotherDevice(torch.Tensor):
    """A CPU tensor that says it is on another device ("meta"), as an accelerator's tensors do;
    ``.cpu()`` copies it to a plain CPU tensor. A stand-in for CUDA on a machine without one:
    whatever is computed from it and kept without ``.cpu()`` still says it is elsewhere."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("meta")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor).clone()
        return super().__torch_function__(func, types, args, kwargs or {})


class _EncodesElsewhere:
    """A predictor whose encoded frames (tokens, uncertainty) are on another device."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.sam_image_embedding_size = predictor.sam_image_embedding_size

    def encode_frames(self, source, frame_indices):
        for frame_idx, tokens, uncertainty in self.predictor.encode_frames(source, frame_indices):
            elsewhere = None if uncertainty is None else uncertainty.as_subclass(_OnAnotherDevice)
            yield frame_idx, tokens.as_subclass(_OnAnotherDevice), elsewhere


def _example_tensors(example) -> list[torch.Tensor]:
    values = [getattr(example.signals, name) for name in ("visual", "text", "uncertainty", "prior")]
    return [example.target, *(value for value in values if value is not None)]


def test_examples_are_kept_on_the_cpu_whatever_the_model_s_device(two_objects):
    # on CUDA the signals stayed on the GPU while the router trained on the CPU: a device mismatch
    config = PruningConfig(scorer="prior")
    predictor = build_random(TINY_SIZE, pruning=config)
    scorer = training_scorer(predictor, config, SIGNALS)
    sequences = list(read_dataset("davis", two_objects, None))
    examples = collect_examples(_EncodesElsewhere(predictor), sequences, scorer, holdout_every=3, progress=False)
    assert len(examples) == 10  # two objects on frames 1..5
    for example in examples:
        assert all(tensor.device == torch.device("cpu") for tensor in _example_tensors(example))
    _, history = train_router(examples, kind="learned", channels=256, signals=SIGNALS, epochs=1, progress=False)
    assert np.isfinite(history[0]["loss"])


def test_train_router_on_the_test_device(two_objects):
    # SAM2PRUNE_TEST_DEVICE=cuda runs it on a GPU: signals computed there, examples kept and trained on the CPU
    config = PruningConfig(scorer="prior")
    predictor = build_random(TINY_SIZE, pruning=config, device=TEST_DEVICE)
    scorer = training_scorer(predictor, config, SIGNALS)
    sequences = list(read_dataset("davis", two_objects, None))
    examples = collect_examples(predictor, sequences, scorer, holdout_every=3, progress=False)
    assert all(tensor.device.type == "cpu" for example in examples for tensor in _example_tensors(example))
    _, history = train_router(examples, kind="learned", channels=256, signals=SIGNALS, epochs=1, progress=False)
    assert np.isfinite(history[0]["loss"]) and 0 <= history[0]["held_out_recall"] <= 1


def test_the_objects_of_a_frame_share_its_signals_computed_once(two_objects, monkeypatch):
    # the visual signal (4 MiB a frame at 1024 px) was computed and stored again for every object
    computed = []

    def counted(tokens, grid):
        computed.append(tokens.shape)
        return visual_context(tokens, grid)

    visual_context = fusion.visual_context
    monkeypatch.setattr(fusion, "visual_context", counted)
    config = PruningConfig(scorer="prior")
    predictor = build_random(TINY_SIZE, pruning=config)
    scorer = training_scorer(predictor, config, SIGNALS)
    sequences = list(read_dataset("davis", two_objects, None))
    examples = collect_examples(predictor, sequences, scorer, holdout_every=3, progress=False)
    assert len(computed) == 5 and len(examples) == 10  # once per frame, for both objects
    for first, second in zip(examples[::2], examples[1::2], strict=True):
        assert first.signals.visual is second.signals.visual
        assert first.signals.uncertainty is second.signals.uncertainty
        assert not torch.equal(first.target, second.target) and not torch.equal(
            first.signals.prior, second.signals.prior
        )
    # the values are those of the signals computed for one object on its own
    _, tokens, uncertainty = next(predictor.encode_frames(sequences[0].source, [5]))
    prior = torch.from_numpy(np.where(sequences[0].ground_truth(4) == 2, 1.0, -1.0)).float()[None, None]
    grid = (predictor.sam_image_embedding_size,) * 2
    alone = scorer.signals_for(
        tokens, ScoringContext(frame_idx=5, grid=grid, prior_mask=prior, uncertainty=uncertainty)
    )
    for name in SIGNALS:
        assert torch.equal(getattr(examples[-1].signals, name), getattr(alone, name)), name


class _FixedLogits(nn.Module):
    """An MLP router stand-in whose logits ``[N]`` are given."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, signals: Signals, size: tuple[int, int]) -> torch.Tensor:
        return self.logits.expand(size)


def test_an_mlp_router_keeps_the_tokens_of_the_highest_logits_whatever_their_spread():
    # a softmax in float32 underflows to 0 once logits spread over ~104: most tokens tied at 0 and
    # top-k picked among them arbitrarily, while training reported the recall of the logits' top-k
    logits = torch.linspace(-1000, 1000, 64)[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    config = PruningConfig(router="learned", signals=("prior",))
    scorer = RouterScorer(config, signals=("prior",), module=_FixedLogits(logits))  # type: ignore[arg-type]
    prior = torch.ones(1, 1, 32, 32)
    with torch.no_grad():
        scores = scorer(torch.randn(1, 64, 8), ScoringContext(frame_idx=1, grid=(8, 8), prior_mask=prior))
    kept = config.kept_count(64)
    assert torch.equal(select_tokens(scores, kept), select_tokens(logits[None], kept))
    assert torch.equal(scores.argsort(dim=-1), logits[None].argsort(dim=-1))  # the whole order, not only the top
