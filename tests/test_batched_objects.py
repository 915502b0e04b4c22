"""Objects tracked in one batched step (issue 13: a fast path) against its eager twin, the one
step per object of sam2 1.1.0: the same logits to float rounding, for the baseline and the
pruned predictor, with objects of different layouts (a late one) grouped apart, and never
batched where sam2's memory encoder constrains masks across its batch; the eager path still
bit-identical to sam2's own predictor, the batched one within rounding."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import torch
from sam2.build_sam import build_sam2_video_predictor

from sam2prune import PruningConfig
from sam2prune.cli import embedded_clip
from sam2prune.predictor import baseline

from conftest import SMALL_SIZE, TINY_SIZE, build_random

NUM_FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    for path in sorted(embedded_clip().glob("*.jpg"))[:NUM_FRAMES]:
        shutil.copy(path, folder / path.name)
    return folder


def track(predictor, clip: Path) -> list[torch.Tensor]:
    """Three objects on frame 0, a fourth from frame 4, a correction on frame 6, then reverse."""
    state = predictor.init_state(str(clip))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[60, 60, 170, 230])
    predictor.add_new_points_or_box(state, 0, 3, points=[[300, 200]], labels=[1])
    predictor.add_new_points_or_box(state, 4, 4, points=[[100, 200]], labels=[1])
    logits = [m.clone() for _, _, m in predictor.propagate_in_video(state)]
    predictor.add_new_points_or_box(state, 6, 1, points=[[240, 90]], labels=[0], clear_old_points=False)
    logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=6)]
    logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=9, reverse=True)]
    return logits


@pytest.mark.parametrize(
    "pruning",
    [None, PruningConfig(retention=0.3, scorer="prior"), PruningConfig(retention=0.3)],
    ids=["baseline", "prior", "router"],
)
def test_batched_step_equals_the_per_object_loop(clip, monkeypatch, pruning):
    batch_sizes = []
    merged = []  # frames whose outputs a batched view merged across objects
    merge = baseline._merge_outputs
    monkeypatch.setattr(baseline, "_merge_outputs", lambda outs: merged.append(len(outs)) or merge(outs))

    def eager_and_batched(batch_objects: bool) -> list[torch.Tensor]:
        predictor = build_random(TINY_SIZE, seed=5, pruning=pruning)
        predictor.batch_objects = batch_objects
        step = predictor._infer_frame  # one step of sam2's, for one object or a batch
        signature = inspect.signature(step)

        def counted(*args, **kwargs):
            batch_sizes.append((batch_objects, signature.bind(*args, **kwargs).arguments["batch_size"]))
            return step(*args, **kwargs)

        monkeypatch.setattr(predictor, "_infer_frame", counted)
        return track(predictor, clip)

    eager = eager_and_batched(False)
    batched = eager_and_batched(True)
    assert len(eager) == len(batched) == NUM_FRAMES + (NUM_FRAMES - 6) + 10
    for frame, (a, b) in enumerate(zip(eager, batched, strict=True)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=f"frame {frame}")
    # the batched run really batched: objects 1-3 (one layout) in steps of 3; object 4, prompted
    # later, has another layout until the frames it can read match
    assert max(size for batched_run, size in batch_sizes if not batched_run) == 1
    assert max(size for batched_run, size in batch_sizes if batched_run) == 3
    eager_steps = sum(1 for batched_run, _ in batch_sizes if not batched_run)
    batched_steps = sum(1 for batched_run, _ in batch_sizes if batched_run)
    assert batched_steps < eager_steps
    # sam2's dense memory attention reads merged outputs; the pruned steps read the banks, so
    # their batched views merge nothing
    assert (len(merged) > 0) == (pruning is None)


def three_objects(predictor, clip: Path) -> list[torch.Tensor]:
    """Three objects prompted on frame 0, tracked forward."""
    state = predictor.init_state(str(clip))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[60, 60, 170, 230])
    predictor.add_new_points_or_box(state, 0, 3, points=[[300, 200]], labels=[1])
    return [m.clone() for _, _, m in predictor.propagate_in_video(state)]


def test_objects_are_not_batched_when_memory_masks_must_not_overlap(clip):
    """With the model's ``non_overlap_masks_for_mem_enc``, sam2 keeps one object's memory mask
    off the others' in the same batch of its memory encoder: one object in sam2 1.1.0's video
    predictor. So objects are not batched then, and the logits are the per-object loop's bits
    (batched, the constraint acted across objects: ~6e-3 apart)."""

    def tracked(batch_objects: bool) -> list[torch.Tensor]:
        predictor = build_random(TINY_SIZE, seed=5)
        predictor.non_overlap_masks_for_mem_enc = True
        predictor.batch_objects = batch_objects
        return three_objects(predictor, clip)

    per_object, default = tracked(False), tracked(True)
    assert len(per_object) == len(default) == NUM_FRAMES
    assert all(torch.equal(a, b) for a, b in zip(per_object, default, strict=True))


def test_eager_path_is_bit_identical_to_sam2(clip):
    weights = build_random(SMALL_SIZE, seed=5).state_dict()
    official = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        None,
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SMALL_SIZE}"],
    )
    official.load_state_dict(weights)
    ours = build_random(SMALL_SIZE, seed=5, pruning=PruningConfig(retention=1.0))
    ours.batch_objects = False
    sam2s = three_objects(official, clip)
    for a, b in zip(sam2s, three_objects(ours, clip), strict=True):
        assert torch.equal(a, b)
    # the default, batched step: sam2's to float rounding only (as the class docstring says)
    ours.batch_objects = True
    for frame, (a, b) in enumerate(zip(sam2s, three_objects(ours, clip), strict=True)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=f"frame {frame}")
