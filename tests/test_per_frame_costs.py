"""Per-frame costs of pruning (issue 13, item 2): nothing is drawn or built on the host and copied
to the device per frame, nothing waits for the device, and what depends on the frame alone is
computed once per frame for all its objects, with the same results as computing it per object.

On a GPU machine `SAM2PRUNE_TEST_DEVICE=cuda pytest tests/test_per_frame_costs.py` runs the
device checks there (benchmarks/gpu.sh does); on the CPU, host-device copies cannot happen, but
syncs (``.item()``, ``nonzero``) are caught all the same.
"""

from __future__ import annotations

import math
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sam2
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import sam2prune
from sam2prune import PruningConfig
from sam2prune.cli import embedded_clip
from sam2prune.data.video import VideoSource
from sam2prune.predictor.session import FrameCache
from sam2prune.scorers import ScoringContext, make_scorer
from sam2prune.scorers.router import fusion
from sam2prune.scorers.router.semantic import Aligner, collect_aligner_data
from sam2prune.scorers.router.uncertainty import UncertaintyProbe, sampled_logit_variance

from conftest import TEST_DEVICE, TINY_SIZE, build_random

DEVICE = torch.empty(0, device=TEST_DEVICE).device  # with its index, as tensors report it ("cuda:0")
SAM2PRUNE_DIR = Path(sam2prune.__file__).parent
SAM2_DIR = Path(sam2.__file__).parent
# sam2's code copied into sam2prune (sam2_copies.py) behaves as sam2 does: it is sam2's traffic
COPIED_FROM_SAM2 = SAM2PRUNE_DIR / "sam2_copies.py"
aten = torch.ops.aten
# ops that make the host wait for the device
SYNCING_OPS = {
    aten._local_scalar_dense.default,  # .item(), int(tensor), bool(tensor)
    aten.item.default,  # .item(), int(tensor), float(tensor) in inference mode
    aten.is_nonzero.default,  # bool(tensor), `if tensor:`
    aten.nonzero.default,
    aten.masked_select.default,
}
# indexing with a boolean mask (``x[x > 0]``): its output's size is the mask's count
MASK_DTYPES = (torch.bool, torch.uint8)


def waits_for_the_device(func, args: tuple) -> bool:
    """Whether an op makes the host wait for the device's result."""
    if func in SYNCING_OPS:
        return True
    if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
        return any(isinstance(i, torch.Tensor) and i.dtype in MASK_DTYPES for i in args[1] if i is not None)
    return False


class HostTraffic(TorchDispatchMode):
    """Records the ops that wait for the device or move data between host and device, with the
    code they come from: the innermost frame in sam2prune (``"sam2prune"``) or in sam2 or
    sam2prune's copies of sam2's code (``"sam2"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, str]] = []  # (origin, op, "file:line")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor) and t.dim() > 0]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in inputs + outputs}
        copies = len(devices) > 1 and "cpu" in devices and not self._asynchronous_upload(func, args, kwargs or {})
        if waits_for_the_device(func, args) or copies:
            self.events.append((*self._origin(), str(func)))
        return out

    @staticmethod
    def _asynchronous_upload(func, args: tuple, kwargs: dict) -> bool:
        """A copy of pinned host memory to the device that the host does not wait for (the
        frame itself, as ``FrameSource`` hands it to a GPU)."""
        source = args[1] if func is aten.copy_.default else args[0]
        return (
            func in (aten._to_copy.default, aten.copy_.default)
            and kwargs.get("non_blocking", args[2] if func is aten.copy_.default and len(args) > 2 else False)
            and source.device.type == "cpu"
            and source.is_pinned()
        )

    @staticmethod
    def _origin() -> tuple[str, str]:
        for frame in reversed(traceback.extract_stack()):
            path = Path(frame.filename)
            where = f"{path.name}:{frame.lineno}"
            if path == COPIED_FROM_SAM2 or SAM2_DIR in path.parents:
                return "sam2", where
            if SAM2PRUNE_DIR in path.parents:
                return "sam2prune", where
        return "other", "?"

    def from_sam2prune(self) -> list[tuple[str, str, str]]:
        return [event for event in self.events if event[0] == "sam2prune"]


def test_the_recorder_sees_a_sync_and_names_its_code():
    with HostTraffic() as traffic:
        value = torch.ones(3).sum().item()  # this file is neither sam2 nor sam2prune
        torch.ones(3).sum()  # no sync
    assert value == 3 and [(origin, op) for origin, _, op in traffic.events] == [
        ("other", "aten._local_scalar_dense.default")
    ]
    x = torch.arange(4.0)
    with HostTraffic() as traffic, torch.inference_mode():  # tracking runs in inference mode
        float(x.sum()), bool(x.sum() > 0), x[x > 1], x[torch.tensor([0, 2])]
    assert [op for _, _, op in traffic.events] == [
        "aten.item.default",
        "aten.is_nonzero.default",
        "aten.index.Tensor",  # the boolean mask; the index list waits for nothing
    ]
    if DEVICE.type == "cuda":  # a copy to the device is traffic, unless asynchronous from pinned memory
        with HostTraffic() as traffic:
            x.to(DEVICE), x.pin_memory().to(DEVICE, non_blocking=True), x.to(DEVICE, non_blocking=True)
        assert [op for _, _, op in traffic.events] == ["aten._to_copy.default"] * 2
    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4] = 1
    with HostTraffic() as traffic:  # sam2prune's aligner fitting picks background tokens with nonzero
        collect_aligner_data([(torch.randn(4, 3), labels, {1: torch.ones(5)})], torch.zeros(5), grid=(2, 2))
    assert ("sam2prune", "aten.nonzero.default") in [(origin, op) for origin, _, op in traffic.events]


# --- the scorers ---------------------------------------------------------------------------------


def _context(frame_idx: int = 0, grid: tuple[int, int] = (16, 16)) -> ScoringContext:
    return ScoringContext(frame_idx=frame_idx, grid=grid)


def test_uniform_pattern_is_built_once_per_grid_and_device(monkeypatch):
    from sam2prune.scorers import baselines

    built = Counter()
    original = baselines.ordered_dither

    def counted(height, width):
        built[(height, width)] += 1
        return original(height, width)

    monkeypatch.setattr(baselines, "ordered_dither", counted)
    scorer = make_scorer(PruningConfig(scorer="uniform"))
    tokens = torch.zeros(1, 256, 8, device=DEVICE)
    scores = [scorer(tokens, _context(frame)) for frame in range(5)]
    scorer(torch.zeros(2, 64, 8, device=DEVICE), _context(0, (8, 8)))
    assert built == {(16, 16): 1, (8, 8): 1}
    assert all(s.device == DEVICE and torch.equal(s, scores[0]) for s in scores)
    assert torch.equal(scores[0][0].cpu(), -original(16, 16))


def test_random_scores_are_drawn_on_the_tokens_device_seeded_per_frame():
    scorer = make_scorer(PruningConfig(scorer="random", seed=3))
    tokens = torch.zeros(2, 256, 8, device=DEVICE)
    first = scorer(tokens, _context(5))
    assert first.device == DEVICE and first.shape == (2, 256)
    assert scorer.generator(5, DEVICE).device == DEVICE
    # reproducible from (seed, frame) alone, in any order of frames and scorers
    scorer(tokens, _context(6))
    assert torch.equal(scorer(tokens, _context(5)), first)
    assert torch.equal(make_scorer(PruningConfig(scorer="random", seed=3))(tokens, _context(5)), first)
    assert not torch.equal(scorer(tokens, _context(6)), first)
    if DEVICE.type == "cpu":  # the CPU stream is the one sam2prune drew on the host before
        expected = torch.rand(2, 256, generator=torch.Generator().manual_seed(3 * 1_000_003 + 5))
        assert torch.equal(first, expected)


def test_mc_dropout_generator_lives_on_the_device_of_the_tokens():
    predictor = build_random()
    probe = UncertaintyProbe(predictor.image_encoder.trunk, (3,), mode="mc", p=0.1, passes=4, seed=7)
    generator = probe.generator(DEVICE)
    assert generator.device == DEVICE and probe.generator(DEVICE) is generator
    probe.detach()
    # the masks are drawn by that generator: two probes with one seed agree, other seeds do not
    x = torch.randn(1, 20, 12, device=DEVICE)
    k, w_q, b_q = torch.randn(1, 2, 20, 4, device=DEVICE), torch.randn(2, 4, 12, device=DEVICE), torch.zeros(2, 4)

    def variance(seed):
        generator = torch.Generator(device=DEVICE).manual_seed(seed)
        return sampled_logit_variance(x, k, w_q, b_q.to(DEVICE), p=0.2, scale=0.5, passes=6, generator=generator)

    assert torch.equal(variance(1), variance(1)) and not torch.equal(variance(1), variance(2))


class CountingEncoder:
    name = "counting"

    def __init__(self, dim: int) -> None:
        self.dim, self.calls = dim, 0

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        return torch.stack([torch.linspace(-1, 1, self.dim) * (len(text) % 5 + 1) for text in texts])


def test_text_relevance_keeps_the_aligner_and_embeddings_on_the_device():
    weight = torch.randn(33, 6, generator=torch.Generator().manual_seed(0))
    aligner = Aligner(weight, "counting", "sam2.1_hiera_t", 256)
    encoder = CountingEncoder(6)
    relevance = fusion.AlignedTextRelevance(aligner, encoder)
    tokens = torch.randn(1, 64, 32, device=DEVICE)
    projected = relevance.project(tokens)
    assert projected.device == DEVICE and relevance.project(tokens).device == DEVICE
    assert list(relevance._aligners) == [DEVICE] and relevance._aligners[DEVICE].weight.device == DEVICE
    scores = [relevance.relevance(projected, "a chair") for _ in range(3)]
    assert encoder.calls == 1 and list(relevance._device_embeddings) == [("a chair", DEVICE)]
    # exactly the aligner's own relevance, computed from the tokens in one step
    expected = aligner.relevance(tokens, encoder.encode(["a chair"])[0])
    assert all(torch.equal(s, expected) for s in scores) and torch.equal(relevance(tokens, "a chair"), expected)


# --- per-frame results shared by the objects of a frame ------------------------------------------


OBJECT_CLICKS = ((200, 112), (112, 128), (60, 60))
TRACKED_FRAMES = 4  # frames 1..4 after the clicks on frame 0


def _track_objects(predictor) -> list[torch.Tensor]:
    source = VideoSource.open(embedded_clip()).head(TRACKED_FRAMES + 1)
    state = predictor.init_state(source)
    for obj_id, point in enumerate(OBJECT_CLICKS, start=1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=np.array([point], np.float32), labels=np.array([1]))
    return [masks.clone() for _, _, masks in predictor.propagate_in_video(state)]


@pytest.fixture(scope="module")
def text_aligner(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("aligner") / "aligner.pt"
    weight = torch.randn(256 + 1, 384, generator=torch.Generator().manual_seed(0)) * 0.1
    Aligner(weight, "minilm", "sam2.1_hiera_t", TINY_SIZE).save(path)
    return path


@pytest.mark.parametrize("scorer", ["prior", "router"])
def test_frame_results_are_computed_once_per_frame_for_all_objects(monkeypatch, scorer, text_aligner):
    """Three objects tracked over 4 frames: the visual context, the projected tokens, the
    saliency and the fill of dropped positions are computed 4 times, not 12; the masks are
    exactly those of computing them for every object."""
    from sam2prune.predictor import pruned
    from sam2prune.scorers import baselines

    if scorer == "router":
        config = PruningConfig(retention=0.3, signals=("visual", "text", "prior"), text="a bed", aligner=text_aligner)
        counted = [(fusion, "visual_context"), (fusion.AlignedTextRelevance, "project"), (pruned, "dropped_token_fill")]
    else:
        config = PruningConfig(retention=0.3, scorer="prior")
        counted = [(baselines, "feature_saliency"), (pruned, "dropped_token_fill")]
    calls = Counter()
    for owner, name in counted:
        original = getattr(owner, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counting)
    predictor = build_random(pruning=config, device=TEST_DEVICE)
    predictor.batch_objects = False  # one step per object: the cache is what shares the frame's results
    shared = _track_objects(predictor)
    assert dict(calls) == {name: TRACKED_FRAMES for _, name in counted}

    calls.clear()
    monkeypatch.setattr(FrameCache, "get", lambda self, frame_idx, key, compute: compute())
    per_object = _track_objects(predictor)
    assert dict(calls) == {name: TRACKED_FRAMES * len(OBJECT_CLICKS) for _, name in counted}
    assert len(shared) == TRACKED_FRAMES + 1 and all(torch.equal(a, b) for a, b in zip(shared, per_object, strict=True))


def test_frame_cache_holds_one_frame():
    cache = FrameCache()
    made = []

    def make(value):
        made.append(value)
        return torch.tensor(value)

    assert cache.get(3, "a", lambda: make(1)) == 1 and cache.get(3, "a", lambda: make(2)) == 1
    assert cache.get(4, "a", lambda: make(3)) == 3 and cache.get(3, "a", lambda: make(4)) == 4
    assert made == [1, 3, 4] and list(cache.entries) == ["a"]


# --- a steady-state tracked frame ----------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        PruningConfig(retention=0.3, scorer="prior"),
        PruningConfig(retention=0.3, scorer="uniform"),
        PruningConfig(retention=0.3, scorer="random"),
        PruningConfig(retention=0.3),  # the default router: visual, analytic uncertainty, prior
        PruningConfig(retention=0.3, uncertainty="mc", mc_passes=3),
    ],
    ids=["prior", "uniform", "random", "router-analytic", "router-mc"],
)
def test_a_steady_frame_has_no_host_sync_or_copy_from_sam2prune(config):
    """Tracked frames after the first two, two objects: no op of sam2prune's own code waits for
    the device (``.item()``, ``nonzero``) or copies between host and device (on CUDA: dropout
    masks, dither patterns, random scores, aligner or text embeddings built on the host)."""
    predictor = build_random(pruning=config, device=TEST_DEVICE)
    source = VideoSource.open(embedded_clip()).head(5)
    state = predictor.init_state(source)
    for obj_id, point in enumerate(OBJECT_CLICKS[:2], start=1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=np.array([point], np.float32), labels=np.array([1]))
    frames = predictor.propagate_in_video(state)
    for _ in range(3):  # frame 0 (prompted) and the first two tracked frames fill the caches
        next(frames)
    with HostTraffic() as traffic:
        steady = [next(frames) for _ in range(2)]
    assert [frame_idx for frame_idx, _, _ in steady] == [3, 4]
    kept = predictor.kept_tokens(state)
    assert kept[(4, 2)].shape[-1] == math.ceil(0.3 * (TINY_SIZE // 16) ** 2)
    assert traffic.from_sam2prune() == []


# --- what a CUDA graph captures ------------------------------------------------------------------

# a tensor made from host data (a list, a number, a numpy array): on CUDA, a copy from the host,
# which a graph cannot capture
FROM_HOST_DATA = {aten.lift_fresh.default, aten.lift_fresh_copy.default}


def test_what_a_graph_captures_never_waits_for_or_reads_from_the_host(monkeypatch):
    """The static step and the image encoder (the default router's uncertainty inside) run as
    they would be captured: no op in them, sam2's included, waits for the device or makes a
    tensor from host data. On CUDA either one makes the capture fail, and the body would run
    eagerly at every frame (``capture_error``)."""
    from sam2prune.predictor.graphs import GraphRunner

    bodies: Counter[str] = Counter()
    events: list[tuple[str, str, str, str]] = []
    run = GraphRunner.__call__

    class Capturable(HostTraffic):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in FROM_HOST_DATA:
                self.events.append((*self._origin(), str(func)))
            return super().__torch_dispatch__(func, types, args, kwargs)

    def watched(self, body, **kwargs):
        def recorded():
            with Capturable() as traffic:
                outputs = body()
            bodies[self.what.split(" on ")[0].split(" of ")[0]] += 1
            events.extend((self.what, *event) for event in traffic.events)
            return outputs

        return run(self, recorded, **kwargs)

    monkeypatch.setattr(GraphRunner, "__call__", watched)
    predictor = build_random(pruning=PruningConfig(retention=0.3), device=TEST_DEVICE)
    predictor.set_static_step("buffers")
    state = predictor.init_state(VideoSource.open(embedded_clip()).looped(19))
    for obj_id, point in enumerate(OBJECT_CLICKS[:2], start=1):
        predictor.add_new_points_or_box(state, 0, obj_id, points=np.array([point], np.float32), labels=np.array([1]))
    for _ in predictor.propagate_in_video(state):
        pass
    # every frame encoded on the fixed input; the two objects' steady frames 16-18 as one step each
    assert bodies == {"the image encoder": 19, "the tracking step": 3}
    assert events == []
