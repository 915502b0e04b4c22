"""Long videos in bounded memory: frames read on demand, and a tracking state that forgets exactly
what later frames can no longer read. Bounded tracking gives the unbounded logits bit for bit
(two objects, a prompted frame mid-clip, a correction click after its neighbours were dropped,
reverse propagation), for the baseline and the pruned predictor; the windows kept are what sam2's
own memory attention reads, derived from the model's config; segment and eval write the same
masks either way."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sam2.modeling.sam2_base import SAM2Base

from sam2prune import PruningConfig
from sam2prune.cli import embedded_clip, main
from sam2prune.data.frames import FrameSource, load_frames_tensor
from sam2prune.data.palette import read_label_png
from sam2prune.data.video import VideoSource
from sam2prune.predictor import SAM2Predictor, bank
from sam2prune.predictor.bank import FrameReads, frame_reads, reads_after
from sam2prune.viz import write_overlay

from conftest import CHAIR_FRAMES, CHAIR_MASKS, SMALL_SIZE, TEST_DEVICE, TINY_SIZE, build_random

NUM_FRAMES = 44  # > num_maskmem - 1 + max_obj_ptrs_in_encoder - 1: frames are dropped mid-clip
PRUNING = PruningConfig(retention=0.3, scorer="prior")  # the prior reads the previous frame's mask


@pytest.fixture(scope="module")
def source() -> VideoSource:
    """The embedded clip looped to 44 frames."""
    return VideoSource.open(embedded_clip()).looped(NUM_FRAMES)


@pytest.fixture(scope="module")
def predictors() -> dict[str, SAM2Predictor]:
    return {
        "baseline": build_random(TINY_SIZE, seed=3, device=TEST_DEVICE),
        "pruned": build_random(TINY_SIZE, seed=3, pruning=PRUNING, device=TEST_DEVICE),
    }


@pytest.fixture(scope="module")
def routers(tmp_path_factory) -> dict[str, SAM2Predictor]:
    """The router with Monte-Carlo dropout uncertainty, and with a text (an aligner of random
    weights, the real MiniLM text encoder)."""
    from sam2prune.scorers.router.semantic import Aligner

    aligner = tmp_path_factory.mktemp("aligner") / "aligner.pt"
    weight = torch.randn(257, 384, generator=torch.Generator().manual_seed(0)) * 0.1
    Aligner(weight, "minilm", "sam2.1_hiera_t", TINY_SIZE).save(aligner)
    text = PruningConfig(retention=0.3, signals=("visual", "text", "prior"), text="a bed", aligner=aligner)
    mc = PruningConfig(retention=0.3, uncertainty="mc", mc_passes=2)
    return {
        "router-mc": build_random(TINY_SIZE, seed=3, pruning=mc, device=TEST_DEVICE),
        "router-text": build_random(TINY_SIZE, seed=3, pruning=text, device=TEST_DEVICE),
    }


# --- what a frame reads: sam2's own memory attention, logged ------------------------------------


class _LoggedOutput(dict):
    """A frame's stored output that logs which of its parts are read."""

    def __init__(self, frame_idx: int, log: set, **parts) -> None:
        super().__init__(**parts)
        self.frame_idx, self.log = frame_idx, log

    def __getitem__(self, key):
        self.log.add((self.frame_idx, key))
        return super().__getitem__(key)


def sam2_reads(model, frame_idx: int, *, reverse: bool, num_frames: int) -> FrameReads:
    """What sam2's ``_prepare_memory_conditioned_features`` reads of the non-conditioning outputs
    of the other frames when tracking ``frame_idx`` (every other frame stored, frame 0 prompted)."""
    side = model.sam_image_embedding_size
    log: set[tuple[int, str]] = set()

    def output(t: int) -> dict:
        return _LoggedOutput(
            t,
            log,
            maskmem_features=torch.zeros(1, model.mem_dim, side, side, dtype=torch.bfloat16),
            maskmem_pos_enc=[torch.zeros(1, model.mem_dim, side, side)],
            obj_ptr=torch.zeros(1, model.hidden_dim),
            pred_masks=torch.zeros(1, 1, 4 * side, 4 * side),
        )

    prompted = 0 if not reverse else num_frames - 1
    output_dict = {
        "cond_frame_outputs": {prompted: output(prompted)},
        "non_cond_frame_outputs": {t: output(t) for t in range(num_frames) if t not in (frame_idx, prompted)},
    }
    tokens = torch.zeros(side * side, 1, model.hidden_dim)
    with torch.inference_mode():
        SAM2Base._prepare_memory_conditioned_features(
            model, frame_idx, False, [tokens], [tokens], [(side, side)], output_dict, num_frames, reverse
        )
    read = {(t, key) for t, key in log if t != prompted}
    return FrameReads(
        spatial=frozenset(t for t, key in read if key == "maskmem_features"),
        pointers=frozenset(t for t, key in read if key == "obj_ptr"),
    )


@pytest.mark.parametrize(
    "num_maskmem, stride, max_pointers, num_frames",
    [(7, 1, 16, 40), (7, 2, 16, 40), (7, 3, 6, 40), (7, 1, 16, 10), (4, 2, 8, 30)],
)
def test_the_windows_kept_are_what_sam2_reads_after_each_frame(
    tiny_predictor, monkeypatch, num_maskmem, stride, max_pointers, num_frames
):
    """frame_reads is what sam2's own memory attention reads; reads_after (what eviction keeps)
    is exactly what the frames after a frame read of it and the frames before it: not one frame
    less (that would change results), not one more (that would hold memory for nothing)."""
    monkeypatch.setattr(tiny_predictor, "num_maskmem", num_maskmem)
    monkeypatch.setattr(tiny_predictor, "memory_temporal_stride_for_eval", stride)
    monkeypatch.setattr(tiny_predictor, "max_obj_ptrs_in_encoder", max_pointers)
    for reverse in (False, True):
        step = -1 if reverse else 1
        order = range(num_frames - 1, -1, -1) if reverse else range(num_frames)
        prompted = {order[0]}  # read as a conditioning frame, which is always kept
        read = {t: sam2_reads(tiny_predictor, t, reverse=reverse, num_frames=num_frames) for t in order}
        for t in order:
            ours = frame_reads(tiny_predictor, t, reverse=reverse, num_frames=num_frames, neighbour_mask=False)
            assert (ours.spatial - prompted, ours.pointers - prompted) == (read[t].spatial, read[t].pointers)
        for t in order:
            later = [u for u in order if (u - t) * step > 0]
            behind = set(range(t + 1)) if not reverse else set(range(t, num_frames))
            expected_spatial = set().union(*(read[u].spatial for u in later)) & behind
            expected_pointers = set().union(*(read[u].pointers for u in later)) & behind
            kept = reads_after(tiny_predictor, t, reverse=reverse, num_frames=num_frames, neighbour_mask=True)
            assert (kept.spatial - prompted, kept.pointers - prompted) == (expected_spatial, expected_pointers), t
            assert kept.masks == ({t} if later else set())  # the next frame's prior reads this frame's mask


# --- bounded == unbounded, bit for bit ---------------------------------------------------------


def first_pass(predictor: SAM2Predictor, state: dict) -> list[torch.Tensor]:
    """Two objects clicked on frame 0 and again on frame 20 (mid-clip), tracked forward through
    the video: with the same prompted frames, their memories share a layout, so they are
    tracked in one batched step (whose rounding differs from one step per object)."""
    logits = [predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])[2]]
    logits.append(predictor.add_new_points_or_box(state, 0, 2, points=[[112, 128]], labels=[1])[2])
    logits.append(predictor.add_new_points_or_box(state, 20, 1, points=[[210, 120]], labels=[1])[2])
    logits.append(predictor.add_new_points_or_box(state, 20, 2, points=[[120, 130]], labels=[1])[2])
    return logits + [m.clone() for _, _, m in predictor.propagate_in_video(state)]


def interact(
    predictor: SAM2Predictor, source: VideoSource, *, bounded: bool, replays: list | None = None
) -> tuple[list[torch.Tensor], dict]:
    """``first_pass``; a correction click on object 2 on frame 30 (its neighbours dropped by
    then; they were tracked in a batched step, and are recomputed in one of the same size) and
    tracking on from it (each object alone: their prompted frames differ now); then tracking in reverse from frame 40 (whose later frames
    were dropped) and a correction click on frame 5 after it. Returns every logits tensor and
    what the state held after the first pass (with how many stretches were tracked again)."""
    state = predictor.init_state(source, bounded_memory=bounded)
    logits = first_pass(predictor, state)
    after_first_pass = predictor.pruning_stats(state)
    after_first_pass["replays"] = len(replays or [])
    clicked = predictor.add_new_points_or_box(state, 30, 2, points=[[100, 100]], labels=[0], clear_old_points=False)
    logits.append(clicked[2])
    logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=30)]
    logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=40, reverse=True)]
    logits.append(predictor.add_new_points_or_box(state, 5, 1, points=[[150, 150]], labels=[1])[2])
    return logits, after_first_pass


def tracked_stretches(monkeypatch, predictor: SAM2Predictor) -> list:
    """Records every run of frames tracked again to recompute what bounded memory dropped, and
    checks that each recomputed output holds only its own memory and pointer (not the rows of
    the batched step it was recomputed in)."""
    replays = []
    original = predictor._recompute
    install = bank.SparseMemoryBank.install

    def recording(inference_state, obj_id, memory_bank, needed, frame_idx):
        replays.extend((obj_id, run.start, frames) for run, frames in memory_bank.missing(needed).items())
        return original(inference_state, obj_id, memory_bank, needed, frame_idx)

    def own_storage(self, frame_idx, out, keep_idx, run):
        for key in ("maskmem_features", "obj_ptr"):
            assert out[key].untyped_storage().nbytes() == out[key].nbytes, (frame_idx, key)
        return install(self, frame_idx, out, keep_idx, run)

    monkeypatch.setattr(predictor, "_recompute", recording)
    monkeypatch.setattr(bank.SparseMemoryBank, "install", own_storage)
    return replays


@pytest.mark.parametrize("kind", ["baseline", "pruned"])
def test_bounded_memory_gives_the_unbounded_logits_bit_for_bit(kind, predictors, source, monkeypatch):
    predictor = predictors[kind]
    unbounded, kept_all = interact(predictor, source, bounded=False)
    replays = tracked_stretches(monkeypatch, predictor)
    bounded, kept_window = interact(predictor, source, bounded=True, replays=replays)
    assert len(bounded) == len(unbounded) == 4 + 44 + 1 + 14 + 41 + 1
    assert all(torch.equal(a, b) for a, b in zip(unbounded, bounded, strict=True))
    # bounded memory dropped frames as the first pass went, recomputing nothing there ...
    assert kept_all["totals"]["frames"] == NUM_FRAMES
    assert kept_window["totals"]["frames"] == 2  # at the end of the video: the prompted frames 0 and 20
    assert kept_window["totals"]["peak_held_bytes"] < kept_all["totals"]["peak_held_bytes"] / 2
    assert kept_window["replays"] == 0
    # ... and recomputed what the clicks and the reverse pass read
    assert {obj_id for obj_id, _, _ in replays} == {1, 2} and all(frames for _, _, frames in replays)


def test_checkpoints_bound_the_frames_a_click_tracks_again(predictors, source, monkeypatch):
    """With a run cut every 8 frames, what a click or a reverse pass recomputes is tracked again
    from at most 8 frames back (without: from the start of the pass, e.g. 29 frames for the
    click on frame 30), to the same bits."""
    predictor = predictors["baseline"]
    unbounded, _ = interact(predictor, source, bounded=False)
    monkeypatch.setattr(predictor, "replay_checkpoint_every", 8)
    replays = tracked_stretches(monkeypatch, predictor)
    bounded, _ = interact(predictor, source, bounded=True, replays=replays)
    assert all(torch.equal(a, b) for a, b in zip(unbounded, bounded, strict=True))
    assert replays and max(abs(t - start) for _, start, frames in replays for t in frames) < 8


def test_what_checkpoints_keep_is_counted_in_the_stats(predictors, source, monkeypatch):
    """A forward pass cut every 8 frames: runs start at frames 1, 9, ..., 41, each keeping what its
    frames read of the frames before it (6 spatial memories, 15 pointers, the previous mask for
    the prior), all dropped from the bank by the end. ``replay_bytes`` counts each once."""
    predictor = predictors["pruned"]
    every = predictor.init_state(source, bounded_memory=False)
    predictor.add_new_points_or_box(every, 0, 1, points=[[200, 112]], labels=[1])
    for _ in predictor.propagate_in_video(every):
        pass
    held = {t: frame[1]["bytes"] for t, frame in predictor.pruning_stats(every)["frames"].items()}
    spatial, pointers = predictor.num_maskmem - 1, predictor.max_obj_ptrs_in_encoder - 1
    starts = range(9, NUM_FRAMES, 8)
    kept = {(t, part) for s in starts for t in range(s - spatial, s) for part in ("features", "indices")}
    kept |= {(t, "pointers") for s in starts for t in range(max(1, s - pointers), s)}
    kept |= {(s - 1, "masks") for s in starts}
    expected = sum(held[t][part] for t, part in kept)
    for checkpoints, replay_bytes in ((None, 0), (8, expected)):
        monkeypatch.setattr(predictor, "replay_checkpoint_every", checkpoints)
        state = predictor.init_state(source)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        for _ in predictor.propagate_in_video(state):
            pass
        totals = predictor.pruning_stats(state)["totals"]
        assert totals["frames"] == 1  # the prompted frame: every tracked frame was dropped
        assert totals["replay_bytes"] == replay_bytes
    assert expected > 0


def test_which_objects_are_batched_does_not_depend_on_frames_no_step_reads(predictors, source):
    """Object 2 is added after object 1 was tracked through the video; tracking again from frame
    20, object 1 still holds (unbounded) frames no step reads, which bounded memory dropped. The
    objects are batched alike either way, so the logits are the same bits."""
    predictor = predictors["baseline"]
    results = []
    for bounded in (False, True):
        state = predictor.init_state(source, bounded_memory=bounded)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        for _ in predictor.propagate_in_video(state):
            pass
        predictor.add_new_points_or_box(state, 0, 2, points=[[112, 128]], labels=[1])
        results.append([m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=20)])
    unbounded, bounded = results
    assert len(unbounded) == len(bounded) == NUM_FRAMES - 20
    assert all(torch.equal(a, b) for a, b in zip(unbounded, bounded, strict=True))


def test_a_removed_object_holds_nothing(predictors, source):
    """Removing an object frees its memory bank: its outputs are no longer held or counted."""
    predictor = predictors["pruned"]
    state = predictor.init_state(source.head(8))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, points=[[112, 128]], labels=[1])
    predictor.set_object_text(state, 1, "a child")
    predictor.set_object_text(state, 3, "a chair")  # an object to be added later
    for _ in predictor.propagate_in_video(state):
        pass
    two = predictor.pruning_stats(state)["totals"]["held_bytes"]
    predictor.remove_object(state, 1)
    session = predictor.session(state)
    assert sorted(session.banks) == [2]
    assert session.object_texts == {3: "a chair"}  # an object added as 1 again starts afresh
    assert 0 < predictor.pruning_stats(state)["totals"]["held_bytes"] < two


def test_a_pass_stopped_by_its_caller_still_forgets_the_last_frame_it_yielded(predictors, source):
    """A caller that breaks out of a pass: the frame it stopped at was tracked and stored, so
    bounded memory treats it as any other (a later pass goes on from it and drops it), instead of
    holding it for ever."""
    predictor = predictors["baseline"]
    state = predictor.init_state(source.head(32))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    for frame_idx, _, _ in predictor.propagate_in_video(state):
        if frame_idx == 20:
            break
    for _ in predictor.propagate_in_video(state, start_frame_idx=21):
        pass
    held = [frame for frame, *_ in predictor.session(state).bank(state, 1).held_frames()]
    assert held == [0]  # the prompted frame alone, at the end of the video


def test_passes_in_chunks_from_the_last_frame_tracked_track_nothing_again(predictors, source, monkeypatch):
    """Passes of 10 frames, each starting on the frame the one before ended with (sam2 tracks its
    start frame again), then of 1 frame: the bits of unbounded memory, nothing dropped had to be
    recomputed (the frames the start frame read stay once a pass ends), and the passes make one
    run that keeps nothing to be tracked again (a run each would keep what its first frame read)."""
    predictor = predictors["pruned"]
    calls = [
        ("click", 0, 1, [200, 112], 1, True),
        *(("propagate", start, 10, False) for start in (0, 10)),
        *(("propagate", start, 1, False) for start in range(20, 31)),
    ]
    clip = source.head(32)
    unbounded = make_calls(predictor, predictor.init_state(clip, bounded_memory=False), calls, clip.width, clip.height)
    replays = tracked_stretches(monkeypatch, predictor)
    state = predictor.init_state(clip)
    bounded = make_calls(predictor, state, calls, clip.width, clip.height)
    assert _equal(unbounded, bounded)
    assert replays == []
    assert len(predictor.session(state).bank(state, 1).history) == 1
    assert predictor.pruning_stats(state)["totals"]["replay_bytes"] == 0


@pytest.mark.parametrize("change", ["replaced", "written-into"])
def test_a_run_goes_on_only_while_the_object_attends_to_what_it_recorded(change, predictors, source, monkeypatch):
    """The prompted frame's output replaced, or its memory written into it, between two chunks
    of a pass by a path with no hook that ends the run (a stand-in for one a future sam2 may
    add: the memory scaled): the second chunk starts a run of its own, so a click on frame 30,
    whose neighbours were dropped, tracks them again reading the new memory, and the frames
    before reading the old one, as unbounded memory did (continuing the run, it tracked them
    all again reading one of them)."""
    predictor = predictors["baseline"]
    clip = source.head(32)
    results = []
    for bounded in (False, True):
        replays = tracked_stretches(monkeypatch, predictor) if bounded else []
        state = predictor.init_state(clip, bounded_memory=bounded)
        logits = [predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])[2]]
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, max_frame_num_to_track=20)]
        conditioning = state["output_dict_per_obj"][0]["cond_frame_outputs"]
        if change == "replaced":
            conditioning[0] = {**conditioning[0], "maskmem_features": conditioning[0]["maskmem_features"] * 1.5}
        else:
            conditioning[0]["maskmem_features"] = conditioning[0]["maskmem_features"] * 1.5
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=20)]
        logits.append(predictor.add_new_points_or_box(state, 30, 1, points=[[100, 100]], labels=[0])[2])
        results.append(logits)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    assert {start for _, start, _ in replays} == {1, 20}  # pointers of frames 15-19, the rest from 20
    assert [(run.start, run.last) for run in predictor.session(state).bank(state, 1).history] == [(1, 20), (20, 31)]


def test_a_run_whose_first_step_failed_is_forgotten(predictors, source, monkeypatch):
    """A step that raises on the first frame of a run (a reverse pass from frame 8) leaves a run
    that tracked nothing; when the next pass does not continue it (a reverse pass from frame 6),
    the run it begins forgets that one (it would keep what its first frame read, for nothing)."""
    predictor = predictors["baseline"]
    state = predictor.init_state(source.head(12))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    for _ in predictor.propagate_in_video(state):
        pass
    original, failures = predictor._infer_frame, []

    def failing(*args, **kwargs):
        if kwargs.get("reverse") and not failures:
            failures.append(kwargs["frame_idx"])
            raise RuntimeError("out of memory, say")
        return original(*args, **kwargs)

    monkeypatch.setattr(predictor, "_infer_frame", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        for _ in predictor.propagate_in_video(state, start_frame_idx=8, reverse=True):
            pass
    for _ in predictor.propagate_in_video(state, start_frame_idx=6, reverse=True):
        pass
    history = predictor.session(state).bank(state, 1).history
    assert failures == [8] and [(run.start, run.last) for run in history] == [(1, 11), (6, 0)]


def test_two_passes_advanced_in_turn_drop_what_they_tracked(predictors, source):
    """A forward and a reverse pass, generators advanced in turn: the bits of unbounded memory,
    and at their ends only the prompted frames are held (each frame is dropped by the run that
    tracked it, though the other pass began a run in between)."""
    predictor = predictors["baseline"]
    clip = source.head(24)
    results = []
    for bounded in (False, True):
        state = predictor.init_state(clip, bounded_memory=bounded)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        predictor.add_new_points_or_box(state, 23, 1, points=[[112, 128]], labels=[1])
        passes = [predictor.propagate_in_video(state), predictor.propagate_in_video(state, 23, reverse=True)]
        results.append([next(gen)[2].clone() for _ in range(24) for gen in passes])
        for gen in passes:
            assert next(gen, None) is None
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    assert sorted(frame for frame, *_ in predictor.session(state).bank(state, 1).held_frames()) == [0, 23]


@pytest.mark.parametrize("kind, part", [("baseline", "pointers"), ("baseline", "spatial"), ("pruned", "masks")])
def test_eviction_one_frame_too_aggressive_changes_the_logits(kind, part, predictors, source, monkeypatch):
    """The comparison above is sharp, and the eviction alone is exact: with recomputation switched
    off, a forward pass still gives the unbounded logits; keeping one frame's pointer, memory or
    (for the prior) mask too few changes them."""
    predictor = predictors[kind]
    unbounded = first_pass(predictor, predictor.init_state(source, bounded_memory=False))
    monkeypatch.setattr(bank.SparseMemoryBank, "missing", lambda self, reads: {})
    exact = first_pass(predictor, predictor.init_state(source, bounded_memory=True))
    assert all(torch.equal(a, b) for a, b in zip(unbounded, exact, strict=True))
    keep = bank.reads_after

    def one_frame_short(model, frame_idx, *, reverse, num_frames, neighbour_mask):
        kept = keep(model, frame_idx, reverse=reverse, num_frames=num_frames, neighbour_mask=neighbour_mask)
        frames = getattr(kept, part)
        fewer = frames - {min(frames, default=None)}
        return FrameReads(**{"spatial": kept.spatial, "pointers": kept.pointers, "masks": kept.masks, part: fewer})

    monkeypatch.setattr("sam2prune.predictor.baseline.reads_after", one_frame_short)
    try:
        wrong = first_pass(predictor, predictor.init_state(source, bounded_memory=True))
    except (AttributeError, TypeError):  # a spatial memory read after it was dropped: not silent either
        assert part == "spatial"
        return
    assert not all(torch.equal(a, b) for a, b in zip(unbounded, wrong, strict=True))


@pytest.mark.parametrize("kind", ["baseline", "pruned"])
def test_frames_tracked_under_prompts_since_changed_are_recomputed_as_they_were(kind, predictors, source, monkeypatch):
    """Object 1's prompt on frame 15 is removed after tracking, and a prompt is added on frame 5:
    the frames tracked with the old prompts are still read as they were (sam2 keeps them), so a
    click on frame 25 and a reverse pass from frame 12 that read them get them recomputed with
    the prompts they were tracked with, to the same bits (this used to be refused)."""
    predictor = predictors[kind]
    results = []
    for bounded in (False, True):
        replays = tracked_stretches(monkeypatch, predictor) if bounded else []
        state = predictor.init_state(source.head(30), bounded_memory=bounded)
        logits = [predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])[2]]
        logits.append(predictor.add_new_points_or_box(state, 15, 1, points=[[210, 120]], labels=[1])[2])
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state)]
        logits.append(predictor.clear_all_prompts_in_frame(state, 15, 1)[2])
        logits.append(predictor.add_new_points_or_box(state, 25, 1, points=[[100, 100]], labels=[0])[2])
        logits.append(predictor.add_new_points_or_box(state, 5, 1, points=[[150, 150]], labels=[1])[2])
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=12, reverse=True)]
        results.append(logits)
    unbounded, bounded = results
    assert len(unbounded) == len(bounded) == 5 + 30 + 13
    assert all(torch.equal(a, b) for a, b in zip(unbounded, bounded, strict=True))
    assert {start for _, start, _ in replays} == {1}  # the forward pass's stretch (through prompted frame 15)


def test_frames_tracked_again_draw_the_same_dropout_masks(source, routers):
    """The router's Monte-Carlo dropout uncertainty: the frames a click tracks again are encoded
    again, and draw the masks they drew the first time (a stream seeded per frame; a stream
    drawn on changed the kept tokens, and the logits)."""
    predictor = routers["router-mc"]
    results = []
    for bounded in (False, True):
        state = predictor.init_state(source.head(30), bounded_memory=bounded)
        logits = [predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])[2]]
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state)]
        logits.append(predictor.add_new_points_or_box(state, 25, 1, points=[[100, 100]], labels=[0])[2])
        results.append(logits)
    assert len(results[0]) == len(results[1]) == 32
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_frames_tracked_with_another_text_are_recomputed_with_the_text_they_were_tracked_with(source, routers):
    """The router's text signal reads the object's text. It is changed twice: after a whole
    pass (a click then reads frames tracked with the old text) and between two stretches of a
    pass (frames after the change read the new one). What the clicks recompute is tracked with
    the text each frame was tracked with, to the unbounded bits (with the new text it differed)."""
    predictor = routers["router-text"]
    results = []
    for bounded in (False, True):
        state = predictor.init_state(source.head(30), bounded_memory=bounded)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        logits = [m.clone() for _, _, m in predictor.propagate_in_video(state, max_frame_num_to_track=14)]
        predictor.set_object_text(state, 1, "a child")
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=15)]
        predictor.set_object_text(state, 1, "a lamp")
        logits.append(predictor.add_new_points_or_box(state, 25, 1, points=[[100, 100]], labels=[0])[2])
        logits.append(predictor.add_new_points_or_box(state, 12, 1, points=[[90, 90]], labels=[0])[2])
        results.append(logits)
    assert len(results[0]) == len(results[1]) == 32
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_frames_tracked_under_a_replaced_pruning_config_are_refused_not_tracked_again(source):
    """``set_pruning`` mid-session: a pass in chunks goes on under the new config to the unbounded
    bits (it tracks nothing again: the new config starts a run of its own), but a click that
    reads frames dropped after they were tracked under the old config is refused, saying what to
    do (tracked again under the new config, they differed from what unbounded memory holds)."""
    predictor = build_random(TINY_SIZE, seed=3, pruning=PRUNING, device=TEST_DEVICE)
    clip = source.head(30)
    results = []
    for bounded in (False, True):
        predictor.set_pruning(PRUNING)
        state = predictor.init_state(clip, bounded_memory=bounded)
        logits = [predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])[2]]
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, max_frame_num_to_track=14)]
        predictor.set_pruning(PruningConfig(retention=0.6, scorer="prior"))
        logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=14)]
        results.append(logits)
    assert len(results[0]) == len(results[1]) == 1 + 15 + 16
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    with pytest.raises(RuntimeError, match=r"frame 25 of object 1 reads frames? .*set_pruning.*reset_state"):
        predictor.add_new_points_or_box(state, 25, 1, points=[[100, 100]], labels=[0], clear_old_points=False)
    assert predictor.session(state).bank(state, 1).history[-1].pruning_generation == predictor.pruning_generation


@pytest.mark.parametrize("how", ["reset_state", "remove_object"])
def test_a_frame_cached_across_a_reset_is_scored_as_in_a_new_session(how, source):
    """sam2's ``reset_state`` (also ``remove_object`` of the last object) keeps the features of
    the frame encoded last, but the session starts anew, without its uncertainty: clicked then
    with ``prune_conditioning_frames``, the router scores it as a new session does (it raised)."""
    pruning = PruningConfig(retention=0.3, prune_conditioning_frames=True)
    predictor = build_random(TINY_SIZE, seed=3, pruning=pruning, device=TEST_DEVICE)
    clip = source.head(12)

    def click_and_track_back(state: dict) -> list[torch.Tensor]:
        logits = [predictor.add_new_points_or_box(state, 7, 1, points=[[150, 120]], labels=[1])[2]]
        return logits + [m.clone() for _, _, m in predictor.propagate_in_video(state, 7, reverse=True)]

    fresh = click_and_track_back(predictor.init_state(clip))
    state = predictor.init_state(clip)
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    for _ in predictor.propagate_in_video(state, max_frame_num_to_track=7):
        pass
    if how == "reset_state":
        predictor.reset_state(state)
    else:
        predictor.remove_object(state, 1)
    assert list(state["cached_features"]) == [7]
    again = click_and_track_back(state)
    assert len(again) == len(fresh) == 1 + 8
    assert all(torch.equal(a, b) for a, b in zip(fresh, again, strict=True))


def test_a_frame_cached_across_set_pruning_is_scored_with_the_new_uncertainty(source):
    """``set_pruning`` to another uncertainty (Monte-Carlo -> closed form) while sam2 caches the
    features of the frame tracked last: a pass from there tracks it again with the new probe's
    uncertainty, as if its features had not been cached (it reused the old probe's map)."""
    old = PruningConfig(retention=0.3, prune_conditioning_frames=True, uncertainty="mc", mc_passes=3)
    new = PruningConfig(retention=0.3, prune_conditioning_frames=True)
    predictor = build_random(TINY_SIZE, seed=3, pruning=old, device=TEST_DEVICE)
    clip = source.head(10)
    runs = []
    for drop_cache in (False, True):
        predictor.set_pruning(old)
        state = predictor.init_state(clip, bounded_memory=False)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        for _ in predictor.propagate_in_video(state, max_frame_num_to_track=7):
            pass
        predictor.set_pruning(new)
        if drop_cache:
            state["cached_features"].clear()
        runs.append([m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=7)])
    assert len(runs[0]) == len(runs[1]) == 3
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_a_mask_prompt_used_as_the_output_reads_no_dropped_frame(source):
    """sam2 hands a mask prompt back as the frame's output (``use_mask_input_as_output_without_sam``),
    reading no memory: with bounded memory it recomputed the frame's window anyway (slower), and
    after ``set_pruning`` raised that the frame read dropped frames, where unbounded memory took
    the mask."""
    predictor = build_random(TINY_SIZE, seed=3, pruning=PRUNING, device=TEST_DEVICE)
    assert predictor.use_mask_input_as_output_without_sam
    mask = np.zeros((source.height, source.width), bool)
    mask[40:80, 40:80] = True
    results = []
    for bounded in (False, True):
        predictor.set_pruning(PRUNING)
        state = predictor.init_state(source, bounded_memory=bounded)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        for _ in predictor.propagate_in_video(state):
            pass
        predictor.set_pruning(PruningConfig(retention=0.5, scorer="prior"))
        results.append(predictor.add_new_mask(state, 40, 1, mask)[2])
    assert torch.equal(*results)
    # a correction click there takes the mask prompt's output as its previous mask (it put back
    # the frame's dropped output first, and said the click read frame 40); the frames it does
    # read, tracked under the old config, are what it is refused for
    click = {"points": [[60, 60]], "labels": [0], "clear_old_points": False}
    with pytest.raises(RuntimeError, match=r"frame 40 of object 1 reads frames 25-39, which bounded memory dropped"):
        predictor.add_new_points_or_box(state, 40, 1, **click)


def test_leaving_a_pass_after_removing_objects_in_it_is_silent_and_touches_no_new_object(predictors, source):
    """Objects removed inside a ``propagate_in_video`` loop, then the loop left (``close``; a
    ``break`` closes it too): as with sam2's generator, no error (a KeyError, from ending the
    frame for objects renumbered or gone). The objects left end the frame as if removed after the
    pass; after ``reset_state`` and an object added again with the same id, the new object's bank
    counts nothing of the old outputs: its stats are a new session's."""
    predictor = predictors["pruned"]
    clip = source.head(8)
    stats, runs = [], []
    for inside in (False, True):
        state = predictor.init_state(clip)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        predictor.add_new_points_or_box(state, 0, 2, points=[[112, 128]], labels=[1])
        passing = predictor.propagate_in_video(state)
        for frame_idx, _, _ in passing:
            if frame_idx == 3:
                break
        if inside:
            predictor.remove_object(state, 1)  # object 2 is renumbered
        passing.close()
        if not inside:
            predictor.remove_object(state, 1)
        stats.append(predictor.pruning_stats(state))
        runs.append([(run.start, run.last) for run in predictor.session(state).bank(state, 2).history])
    assert stats[0]["frames"] == stats[1]["frames"] and runs[0] == runs[1] == [(1, 3)]

    def clicked(state: dict) -> dict:
        predictor.add_new_points_or_box(state, 0, 1, points=[[112, 128]], labels=[1])
        return state

    state = predictor.init_state(clip)
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    passing = predictor.propagate_in_video(state)
    for frame_idx, _, _ in passing:
        if frame_idx == 3:
            predictor.reset_state(state)
            clicked(state)  # object 1 again, at the same index, with an output dict of its own
            break
    passing.close()
    assert predictor.pruning_stats(state) == predictor.pruning_stats(clicked(predictor.init_state(clip)))


def test_the_state_holds_a_window_of_frames_derived_from_the_config(predictors, source, monkeypatch):
    """A pass stopped mid-video (on frame 30): each object holds what frames 30 and 31 read, the
    spatial memories of the num_maskmem - 1 frames before each and the pointers of
    max_obj_ptrs_in_encoder - 1 frames; the pruned predictor also their previous frames' masks
    (its prior). With stride 2 and 8 pointers, fewer."""
    for kind, stride, max_pointers in (("baseline", 1, 16), ("pruned", 1, 16), ("baseline", 2, 8)):
        predictor = predictors[kind]
        monkeypatch.setattr(predictor, "memory_temporal_stride_for_eval", stride)
        monkeypatch.setattr(predictor, "max_obj_ptrs_in_encoder", max_pointers)
        state = predictor.init_state(source)
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        for _ in predictor.propagate_in_video(state, max_frame_num_to_track=30):
            pass
        outputs = state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
        features = sorted(t for t, out in outputs.items() if out["maskmem_features"] is not None)
        pointers = sorted(t for t, out in outputs.items() if out["obj_ptr"] is not None)
        masks = sorted(t for t, out in outputs.items() if out["pred_masks"] is not None)
        if stride == 1:
            assert features == list(range(30 - (predictor.num_maskmem - 1), 31))  # 24..30: frame 30 reads 24..29
            assert pointers == list(range(30 - (max_pointers - 1), 31))  # 15..30
        else:  # the previous frame (29 for 30, 30 for 31), then 5 strided memories: 28 - 2k, k = 0..4
            assert features == [20, 22, 24, 26, 28, 29, 30] and pointers == list(range(30 - (max_pointers - 1), 31))
        assert masks == ([29, 30] if kind == "pruned" else [])
        assert sorted(outputs) == sorted(set(features) | set(pointers) | set(masks))
        stats = predictor.pruning_stats(state)
        assert stats["totals"]["frames"] == len(outputs) + 1  # and the prompted frame 0
        # the peak: while frame 30 was handed out, with its mask, which only the pruned predictor's
        # next frame reads
        peak, held = stats["totals"]["peak_held_bytes"], stats["totals"]["held_bytes"]
        assert peak == held if kind == "pruned" else peak > held
        monkeypatch.undo()


# --- random sequences of sam2's calls -----------------------------------------------------------


def random_calls(rng: random.Random, width: int, height: int) -> list[tuple]:
    """A user's session: clicks, boxes and masks on any frame and object, passes forward and in
    reverse from anywhere for any length, prompts cleared, objects removed, texts changed; after
    an object prompted and tracked to the end (so that later calls read frames it dropped)."""
    point = [rng.uniform(0, width), rng.uniform(0, height)]
    calls: list[tuple] = [
        ("click", rng.randrange(NUM_FRAMES // 2), 1, point, 1, True),
        ("propagate", None, None, False),
    ]
    for _ in range(rng.randint(5, 9)):
        frame, obj_id, kind = rng.randrange(NUM_FRAMES), rng.choice([1, 2, 3]), rng.random()
        if kind < 0.35:
            point = [rng.uniform(0, width), rng.uniform(0, height)]
            calls.append(("click", frame, obj_id, point, rng.choice([0, 1, 1]), rng.random() < 0.7))
        elif kind < 0.42:
            calls.append(("mask", frame, obj_id, rng.randrange(height - 40), rng.randrange(width - 40)))
        elif kind < 0.47:
            x0, x1 = sorted(rng.uniform(0, width) for _ in range(2))
            y0, y1 = sorted(rng.uniform(0, height) for _ in range(2))
            calls.append(("box", frame, obj_id, [x0, y0, x1, y1]))
        elif kind < 0.8:
            start = None if rng.random() < 0.4 else rng.randrange(NUM_FRAMES)
            length = None if rng.random() < 0.5 else rng.randint(0, NUM_FRAMES)
            calls.append(("propagate", start, length, rng.random() < 0.35))
        elif kind < 0.87:
            calls.append(("clear", frame, obj_id))
        elif kind < 0.92:
            calls.append(("remove", obj_id))
        else:
            calls.append(("text", obj_id, rng.choice(["a child", "a lamp", "a bed"])))
    return calls


def make_calls(predictor: SAM2Predictor, state: dict, calls: list[tuple], width: int, height: int) -> list:
    """Every mask logits tensor and object id list the calls return, or the error a call raised."""
    results: list = []
    for call in calls:
        name, *args = call
        try:
            if name == "click":
                frame, obj_id, point, label, clear = args
                out = predictor.add_new_points_or_box(
                    state, frame, obj_id, points=[point], labels=[label], clear_old_points=clear
                )
            elif name == "box":
                out = predictor.add_new_points_or_box(state, args[0], args[1], box=args[2])
            elif name == "mask":
                frame, obj_id, top, left = args
                mask = np.zeros((height, width), bool)
                mask[top : top + 40, left : left + 40] = True
                out = predictor.add_new_mask(state, frame, obj_id, mask)
            elif name == "propagate":
                start, length, reverse = args
                passed = predictor.propagate_in_video(
                    state, start_frame_idx=start, max_frame_num_to_track=length, reverse=reverse
                )
                out = [(frame, list(ids), masks.clone()) for frame, ids, masks in passed]
            elif name == "clear":
                out = predictor.clear_all_prompts_in_frame(state, *args)
            elif name == "remove":
                out = predictor.remove_object(state, *args)
            else:
                out = predictor.set_object_text(state, *args) if hasattr(predictor, "set_object_text") else None
        except Exception as error:  # sam2's own refusals (a pass with no prompts): the same either way
            out = f"{type(error).__name__}: {error}"
        results.append((call, _copied(out)))
    return results


def _copied(out):
    """A call's result, copied (sam2 returns its live object id list)."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, list | tuple):
        return [_copied(item) for item in out]
    return out


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize(
    "kind, seed, checkpoints, corrections_as_conditioning",
    [
        ("baseline", 11, None, False),
        ("pruned", 12, 5, False),
        ("router-mc", 13, None, False),
        ("router-text", 14, 8, False),
        ("pruned", 15, None, True),  # as eval's protocol corrects (clicks on tracked frames condition)
    ],
)
def test_random_sessions_give_the_unbounded_bits(
    kind, seed, checkpoints, corrections_as_conditioning, predictors, routers, source, monkeypatch
):
    """Seeded random sequences of sam2's calls (how a randomised search found the two bugs it
    fixed: prompts changed since a stretch was tracked, dropout masks drawn on): bounded and
    unbounded memory return the same bits from every call, and frames were tracked again."""
    predictor = {**predictors, **routers}[kind]
    monkeypatch.setattr(predictor, "replay_checkpoint_every", checkpoints)
    monkeypatch.setattr(predictor, "add_all_frames_to_correct_as_cond", corrections_as_conditioning)
    calls = random_calls(random.Random(seed), source.width, source.height)
    unbounded = make_calls(
        predictor, predictor.init_state(source, bounded_memory=False), calls, source.width, source.height
    )
    replays = tracked_stretches(monkeypatch, predictor)
    bounded = make_calls(predictor, predictor.init_state(source), calls, source.width, source.height)
    for (call, expected), (_, got) in zip(unbounded, bounded, strict=True):
        assert _equal(expected, got), call
    assert replays, calls


# --- sequences found in review: each diverged or crashed before its fix ------------------------

A, B, C = [200, 112], [112, 128], [150, 150]
REVIEWED = {
    # clearing the prompts of a conditioning frame ends the run that passed it: a later pass must
    # not continue that run, nor a replay treat the cleared frame as prompted
    "cleared-conditioning-frame": [
        ("click", 0, 1, A, 1, True),
        ("click", 10, 1, C, 1, True),
        ("propagate", None, 19, False),
        ("clear", 10, 1),
        ("propagate", 20, None, False),
        ("click", 30, 1, C, 1, True),
    ],
    # sam2's preflight refuses a pass (object 2 has no prompt left) after merging object 1's
    # correction: object 1's run ends even so
    "pass-refused-after-merging": [
        ("click", 0, 1, A, 1, True),
        ("click", 0, 2, B, 1, True),
        ("propagate", None, 19, False),
        ("click", 10, 1, C, 0, False),
        ("clear", 0, 2),
        ("propagate", 20, None, False),
        ("click", 0, 2, B, 1, True),
        ("propagate", 20, None, False),
        ("click", 30, 1, C, 1, True),
    ],
    # a run that attended to a conditioning frame pruned since replays with that frame's tokens
    "replay-reads-a-pruned-conditioning-frame-cleared-since": [
        ("click", 0, 1, A, 1, True),
        ("click", 10, 1, C, 1, True),
        ("propagate", None, None, False),
        ("clear", 10, 1),
        ("propagate", 0, 15, False),
        ("click", 30, 1, C, 1, True),
    ],
    # memories cleared around a prompted frame keep the other prompted frames' tokens
    "memory-cleared-around-pruned-conditioning-frames": [
        ("click", 0, 1, A, 1, True),
        ("click", 4, 1, C, 1, True),
        ("propagate", None, None, False),
        ("click", 30, 1, C, 1, True),
    ],
    # a correction click on a tracked frame (not a conditioning one) that a reverse pass then
    # tracked again dense (no prior after the last frame): the next pass's preflight prunes only
    # the prompts' outputs it merges, not that tracked output (bounded memory had dropped it, or
    # its mask)
    "tracked-output-on-a-clicked-frame": [
        ("click", 0, 1, A, 1, True),
        ("propagate", None, None, False),
        ("click", 31, 1, C, 1, False),
        ("propagate", 31, None, True),
        ("propagate", 30, 3, True),
    ],
    "tracked-output-on-a-clicked-frame-replayed": [
        ("click", 0, 1, A, 1, True),
        ("propagate", None, None, False),
        ("click", 31, 1, C, 1, False),
        ("propagate", 31, 1, True),
        ("propagate", 29, None, True),
        ("click", 29, 1, B, 0, False),
    ],
    "tracked-output-on-a-clicked-frame-mask-dropped": [
        ("click", 0, 1, A, 1, True),
        ("propagate", None, None, False),
        ("click", 31, 1, C, 1, False),
        ("propagate", 31, 3, True),
        ("propagate", 27, 3, True),
    ],
}
REFUSED = {"pass-refused-after-merging": {5}}  # sam2's preflight: object 2 has no prompts


@pytest.fixture(scope="module")
def pruned_conditioning() -> SAM2Predictor:
    pruning = PruningConfig(retention=0.3, scorer="prior", prune_conditioning_frames=True)
    return build_random(TINY_SIZE, seed=3, pruning=pruning, device=TEST_DEVICE)


@pytest.mark.parametrize(
    "kind, sequence, clear_around_input",
    [
        ("pruned", "cleared-conditioning-frame", False),
        ("pruned", "pass-refused-after-merging", False),
        ("pruned-conditioning", "replay-reads-a-pruned-conditioning-frame-cleared-since", False),
        ("pruned-conditioning", "memory-cleared-around-pruned-conditioning-frames", True),
        ("pruned-conditioning", "tracked-output-on-a-clicked-frame", False),
        ("pruned-conditioning", "tracked-output-on-a-clicked-frame-replayed", False),
        ("pruned-conditioning", "tracked-output-on-a-clicked-frame-mask-dropped", False),
    ],
)
def test_reviewed_sessions_give_the_unbounded_bits(
    kind, sequence, clear_around_input, predictors, pruned_conditioning, source, monkeypatch
):
    """On 32 frames (frame 30's neighbours are dropped by then). The pruned predictor runs the
    baseline's bookkeeping too."""
    source = source.head(32)
    predictor = {**predictors, "pruned-conditioning": pruned_conditioning}[kind]
    monkeypatch.setattr(predictor, "clear_non_cond_mem_around_input", clear_around_input)
    calls = REVIEWED[sequence]
    unbounded = make_calls(
        predictor, predictor.init_state(source, bounded_memory=False), calls, source.width, source.height
    )
    replays = tracked_stretches(monkeypatch, predictor)
    bounded = make_calls(predictor, predictor.init_state(source), calls, source.width, source.height)
    refused = {i for i, (_, got) in enumerate(bounded) if isinstance(got, str)}
    assert refused == REFUSED.get(sequence, set()), [bounded[i] for i in refused]
    for (call, expected), (_, got) in zip(unbounded, bounded, strict=True):
        assert _equal(expected, got), call
    assert replays


# --- frames on demand --------------------------------------------------------------------------


def test_frames_are_read_on_demand_once_per_forward_pass(predictors, source, tmp_path):
    """sam2's frames exactly, read when tracking reaches them: each once in a forward pass, from a
    folder or a video file (random access for a reverse pass and clicks on any frame)."""
    predictor = predictors["baseline"]
    state = predictor.init_state(source)
    frames = state["images"]
    assert isinstance(frames, FrameSource) and len(frames) == NUM_FRAMES
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    for _ in predictor.propagate_in_video(state):
        pass
    assert sorted(frames.reads) == list(range(NUM_FRAMES)) and max(frames.reads.values()) == 1

    video = tmp_path / "clip.mp4"
    write_overlay(video, VideoSource.open(embedded_clip()).looped(30).iter_frames(), fps=10)
    from_file = VideoSource.open(video)
    every = load_frames_tensor(from_file, TINY_SIZE, progress=False)
    on_demand = FrameSource(from_file, TINY_SIZE, read_ahead=3, cache_frames=5)
    for index in [*range(30), *range(29, -1, -1), 17, 3, 25]:
        assert torch.equal(on_demand[index], every[index]), index
    assert on_demand.reads[10] == 2 and max(on_demand.reads.values()) <= 3
    with pytest.raises(IndexError):
        on_demand[30]


def test_frames_kept_as_uint8_are_normalised_to_the_same_bits():
    """For a GPU, frames are kept resized as uint8 (pinned) and normalised on the device when
    asked for: the same bits as sam2's own loader's float32 frames. On the CPU both kinds."""
    from sam2.utils.misc import load_video_frames_from_jpg_images

    source = VideoSource.open(embedded_clip()).head(6)
    every, _, _ = load_video_frames_from_jpg_images(
        str(embedded_clip()), SMALL_SIZE, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    kinds = {TEST_DEVICE: None, "cpu": True} if TEST_DEVICE != "cpu" else {"cpu": True}
    for device, uint8_frames in kinds.items():
        frames = FrameSource(source, SMALL_SIZE, device=device, uint8_frames=uint8_frames, read_ahead=1, cache_frames=3)
        assert frames.uint8_frames
        for index in [0, 1, 2, 3, 4, 5, 1, 0]:
            frame = frames[index]
            assert frame.dtype == torch.float32 and frame.device.type == torch.device(device).type
            assert torch.equal(frame.cpu(), every[index]), (device, index)
        kept = next(iter(frames._cache.values()))
        assert kept.dtype == torch.uint8 and kept.device.type == "cpu" and kept.is_pinned() == (device == "cuda")
        assert max(frames.reads.values()) == 2  # frames 0 and 1 were dropped from the cache of 3


def test_several_threads_resize_frames_and_a_corrupt_one_fails_alone(tmp_path, monkeypatch):
    """With ``workers`` (a GPU's default) decoded frames are resized on a pool of threads: the
    same frames, each read once going forward; a corrupt file raises an error naming it for its
    frame only."""

    from sam2.utils.misc import load_video_frames_from_jpg_images

    from sam2prune.data import frames as frames_module
    from sam2prune.errors import InputError

    sam2_frames, _, _ = load_video_frames_from_jpg_images(
        str(embedded_clip()), TINY_SIZE, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, path in enumerate(VideoSource.open(embedded_clip()).frame_files[:12]):
        shutil.copy(path, folder / f"{index:05d}.jpg")
    source = VideoSource.open(folder)  # checked while the frames are whole
    (folder / "00007.jpg").write_bytes(b"not a jpeg")
    threads = set()
    resize = frames_module.resize_frame

    def recorded(frame, image_size):
        threads.add(threading.current_thread().name)
        return resize(frame, image_size)

    monkeypatch.setattr(frames_module, "resize_frame", recorded)
    frames = FrameSource(source, TINY_SIZE, workers=3, uint8_frames=True, read_ahead=4, cache_frames=6)
    for index in range(12):
        if index == 7:
            with pytest.raises(InputError, match=r"00007\.jpg is corrupt"):
                frames[index]
        else:
            assert torch.equal(frames[index], sam2_frames[index]), index
    assert sorted(frames.reads) == [i for i in range(12) if i != 7] and max(frames.reads.values()) == 1
    assert threads and all(name.startswith("sam2prune-resize") for name in threads)
    frames.close()
    assert frames._pool is None and not frames._cache
    assert torch.equal(frames[3], sam2_frames[3])  # reading again after close


def _held_reader(monkeypatch) -> threading.Event:
    """Frame reading waits until the event returned is set (so that requests pile up)."""
    from sam2prune.data import frames as frames_module

    release = threading.Event()

    class HeldReader(frames_module.FrameReader):
        def read(self, indices):
            assert release.wait(timeout=30)
            yield from super().read(indices)

    monkeypatch.setattr(frames_module, "FrameReader", HeldReader)
    return release


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_frames_asked_for_from_several_threads_all_come(monkeypatch):
    """A request for another frame does not cancel the frame another thread waits for (it used to
    wait forever), nor does the cache drop it before it is handed out."""
    release = _held_reader(monkeypatch)
    frames = FrameSource(VideoSource.open(embedded_clip()).looped(40), TINY_SIZE, read_ahead=4, cache_frames=6)
    got: dict[int, torch.Tensor] = {}
    threads = {
        index: threading.Thread(target=lambda i=index: got.update({i: frames[i]}), daemon=True) for index in (0, 10, 20)
    }
    for index, thread in threads.items():
        thread.start()
        _until(lambda i=index: frames._waiting[i] == 1)
    release.set()
    for thread in threads.values():
        thread.join(timeout=30)
    assert sorted(got) == [0, 10, 20]
    every = load_frames_tensor(VideoSource.open(embedded_clip()).looped(40), TINY_SIZE, progress=False)
    assert all(torch.equal(frame, every[index]) for index, frame in got.items())
    frames.close()


def test_a_thread_waiting_while_the_source_is_closed_still_gets_its_frame(monkeypatch):
    """``close`` used to drop what was still to be read (and the frames read, before their
    waiters took them): a thread waiting for one waited forever."""
    release = _held_reader(monkeypatch)
    frames = FrameSource(VideoSource.open(embedded_clip()).looped(40), TINY_SIZE, read_ahead=4, cache_frames=6)
    got: dict[int, torch.Tensor] = {}
    waiters = {
        index: threading.Thread(target=lambda i=index: got.update({i: frames[i]}), daemon=True) for index in (0, 20)
    }
    waiters[0].start()
    _until(lambda: 0 in frames._reading)  # frames 0-4 are being read; 20 will wait its turn
    waiters[20].start()
    _until(lambda: frames._waiting[20] == 1 and 20 in frames._wanted)
    closing = threading.Thread(target=frames.close, daemon=True)
    closing.start()
    _until(lambda: not frames._wanted)  # close dropped frame 20 from what is to be read
    release.set()
    for thread in (*waiters.values(), closing):
        thread.join(timeout=30)
        assert not thread.is_alive()
    every = load_frames_tensor(VideoSource.open(embedded_clip()).looped(40), TINY_SIZE, progress=False)
    assert sorted(got) == [0, 20] and all(torch.equal(frame, every[i]) for i, frame in got.items())
    frames.close()


def test_every_thread_waiting_for_a_corrupt_frame_gets_its_error_and_a_new_request_reads_it_again(
    tmp_path, monkeypatch
):
    from sam2prune.errors import InputError

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, path in enumerate(VideoSource.open(embedded_clip()).frame_files[:6]):
        shutil.copy(path, folder / f"{index:05d}.jpg")
    source = VideoSource.open(folder)  # checked while the frames are whole
    whole = (folder / "00003.jpg").read_bytes()
    (folder / "00003.jpg").write_bytes(b"not a jpeg")
    release = _held_reader(monkeypatch)
    frames = FrameSource(source, TINY_SIZE, read_ahead=1, cache_frames=3)
    errors: dict[str, BaseException] = {}

    def ask(name: str) -> None:
        try:
            frames[3]
        except InputError as error:
            errors[name] = error

    threads = [threading.Thread(target=ask, args=(name,), daemon=True) for name in "ab"]
    for thread in threads:
        thread.start()
    _until(lambda: frames._waiting[3] == 2)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(errors) == ["a", "b"] and all("00003.jpg is corrupt" in str(e) for e in errors.values())
    (folder / "00003.jpg").write_bytes(whole)  # the file is whole again (a transient failure)
    assert torch.equal(frames[3], load_frames_tensor(source, TINY_SIZE, progress=False)[3])
    frames.close()


# --- segment and eval: the same masks, written as they come --------------------------------------


def test_segment_writes_the_same_masks_with_bounded_memory(tmp_path, monkeypatch):
    """Object 1 clicked on frames 0 and 20, object 2 first on frame 30: tracked forward from 0,
    then backwards from 30 (object 2 from its prompt, object 1 between its prompts), over frames
    whose forward memories bounded memory had dropped and recomputes."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, path in enumerate(VideoSource.open(embedded_clip()).looped(NUM_FRAMES).frame_files):
        shutil.copy(path, folder / f"{index:05d}.jpg")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps(
            {
                "objects": [
                    {"obj_id": 1, "frame": 0, "points": [[200, 112]], "labels": [1]},
                    {"obj_id": 1, "frame": 20, "points": [[210, 120]], "labels": [1]},
                    {"obj_id": 2, "frame": 30, "points": [[112, 128]], "labels": [1]},
                ]
            }
        )
    )
    recomputed = []
    original = SAM2Predictor._recompute

    def counted(self, inference_state, obj_id, memory_bank, needed, frame_idx):
        recomputed.extend((obj_id, frame_idx) for _ in memory_bank.missing(needed))
        return original(self, inference_state, obj_id, memory_bank, needed, frame_idx)

    monkeypatch.setattr(SAM2Predictor, "_recompute", counted)
    masks = {}
    for name, extra in (("bounded", []), ("unbounded", ["--unbounded-memory"])):
        out = tmp_path / name
        arguments = [str(folder), "--prompts", str(prompts), "--out", str(out), "--random-weights"]
        assert main(["segment", *arguments, "--image-size", str(TINY_SIZE), "--scorer", "prior", *extra]) == 0
        masks[name] = [read_label_png(out / f"{index:05d}.png") for index in range(NUM_FRAMES)]
    assert all(np.array_equal(a, b) for a, b in zip(masks["bounded"], masks["unbounded"], strict=True))
    # backwards from frame 30, sam2 reads the memories of the frames after: object 2's forward
    # outputs from its prompt on 30 (dropped since), then object 1's forward memories above 19
    assert recomputed == [(2, 29), (1, 19)]


def _looped_davis(tmp_path: Path, frames: int) -> Path:
    """A DAVIS-layout root whose one sequence is the chair clip and its masks looped."""
    root = tmp_path / "DAVIS"
    images, annotations = root / "JPEGImages" / "480p" / "chair", root / "Annotations" / "480p" / "chair"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    sources = sorted(CHAIR_FRAMES.glob("*.jpg"))
    for index in range(frames):
        shutil.copy(sources[index % len(sources)], images / f"{index:05d}.jpg")
        shutil.copy(CHAIR_MASKS / f"{sources[index % len(sources)].stem}.png", annotations / f"{index:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    return root


def test_eval_gives_the_same_masks_and_scores_with_bounded_memory(tmp_path):
    root = _looped_davis(tmp_path, 24)
    reports = {}
    for name, extra in (("bounded", []), ("unbounded", ["--unbounded-memory"])):
        out = tmp_path / name
        arguments = ["eval", "--dataset", "davis", "--root", str(root), "--out", str(out), "--random-weights"]
        assert main([*arguments, "--image-size", str(TINY_SIZE), "--scorer", "prior", "--max-rounds", "2", *extra]) == 0
        reports[name] = json.loads((out / "report.json").read_text())
    bounded, unbounded = reports["bounded"]["overall"], reports["unbounded"]["overall"]
    assert bounded["refinement_rounds"] == unbounded["refinement_rounds"] > 0
    for key in ("J&F-Mean", "J-Mean", "F-Mean", "clicks", "memory_bank_bytes_per_frame", "kept_fraction"):
        assert bounded[key] == unbounded[key], key
    for index in range(24):
        a = read_label_png(tmp_path / "bounded" / "masks" / "chair" / f"{index:05d}.png")
        assert np.array_equal(a, read_label_png(tmp_path / "unbounded" / "masks" / "chair" / f"{index:05d}.png"))
    assert reports["bounded"]["settings"]["bounded_memory"] and not reports["unbounded"]["settings"]["bounded_memory"]
