"""Objects first prompted on a later frame: tracked only from their prompt on (forward), backwards
from it only when asked (reverse), for the baseline and the pruned predictor; the segment job's
labels and the evaluation tracker with such objects."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sam2.modeling.sam2_base import NO_OBJ_SCORE

from sam2prune import PruningConfig, segment
from sam2prune.config import ProtocolConfig
from sam2prune.data.datasets import Sequence
from sam2prune.data.palette import read_label_png
from sam2prune.data.video import VideoSource
from sam2prune.evaluation.protocol import SequenceTracker
from sam2prune.prompts import ObjectPrompt
from sam2prune.segment import labels_from_logits, segment_video

from conftest import CHAIR_FRAMES, CHAIR_MASKS, build_random

NUM_FRAMES = 9  # the 6 chair frames, then 4, 3, 2 again
LATE = 5  # the frame the late object is first prompted on
EARLY_CLICK = [300, 100]  # (x, y) on the chair
LATE_CLICK = [550, 360]
PREDICTOR_KINDS = ("baseline", "pruned")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long_chair")
    for target, source in enumerate([0, 1, 2, 3, 4, 5, 4, 3, 2]):
        shutil.copy(CHAIR_FRAMES / f"{source:05d}.jpg", folder / f"{target:05d}.jpg")
    return folder


@pytest.fixture(scope="module")
def predictors() -> dict:
    return {
        "baseline": build_random(pruning=None),
        "pruned": build_random(pruning=PruningConfig(retention=0.5, scorer="prior")),
    }


def tracked(predictor, state: dict, **kwargs) -> dict[int, torch.Tensor]:
    """Frame index -> yielded logits ``[num_objects, 1, H, W]`` of one ``propagate_in_video`` pass."""
    return {frame: logits.clone() for frame, _, logits in predictor.propagate_in_video(state, **kwargs)}


def stored_frames(state: dict, obj_id: int) -> tuple[list[int], list[int]]:
    """(conditioning frames, non-conditioning frames) with a stored output for one object."""
    outputs = state["output_dict_per_obj"][state["obj_id_to_idx"][obj_id]]
    return sorted(outputs["cond_frame_outputs"]), sorted(outputs["non_cond_frame_outputs"])


def two_objects(predictor, clip: Path) -> dict:
    """A session with object 1 clicked on frame 0 and object 2 on frame ``LATE`` (keeping every
    frame's outputs, which these tests inspect)."""
    state = predictor.init_state(clip, bounded_memory=False)
    predictor.add_new_points_or_box(state, 0, 1, points=[EARLY_CLICK], labels=[1])
    predictor.add_new_points_or_box(state, LATE, 2, points=[LATE_CLICK], labels=[1])
    return state


def late_object_alone(predictor, clip: Path) -> dict:
    state = predictor.init_state(clip, bounded_memory=False)
    predictor.add_new_points_or_box(state, LATE, 2, points=[LATE_CLICK], labels=[1])
    return state


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
def test_late_object_has_no_memory_before_its_prompt_and_tracks_as_if_alone(kind, predictors, long_clip):
    predictor = predictors[kind]
    state = two_objects(predictor, long_clip)
    together = tracked(predictor, state)  # from frame 0, the earliest prompt
    assert sorted(together) == list(range(NUM_FRAMES))
    assert all(logits.shape[0] == 2 for logits in together.values())  # every object in every yield

    # nothing was run or stored for object 2 before its prompt
    assert stored_frames(state, 2) == ([LATE], list(range(LATE + 1, NUM_FRAMES)))
    assert sorted(state["frames_tracked_per_obj"][state["obj_id_to_idx"][2]]) == list(range(LATE, NUM_FRAMES))
    late_row = list(state["obj_ids"]).index(2)
    for frame in range(LATE):
        empty = together[frame][late_row]
        torch.testing.assert_close(empty, torch.full_like(empty, NO_OBJ_SCORE))
    # object 1 is tracked on every frame
    assert stored_frames(state, 1) == ([0], list(range(1, NUM_FRAMES)))

    alone_state = late_object_alone(predictor, long_clip)
    alone = tracked(predictor, alone_state)
    assert sorted(alone) == list(range(LATE, NUM_FRAMES))
    for frame in range(LATE, NUM_FRAMES):
        assert torch.equal(together[frame][late_row], alone[frame][0]), frame
    # the comparison is sharp: object 2's logits change from frame to frame
    assert not torch.equal(alone[LATE + 1], alone[LATE + 2])
    if kind == "pruned":  # its tracked frames really were pruned
        outputs = state["output_dict_per_obj"][state["obj_id_to_idx"][2]]["non_cond_frame_outputs"]
        bank = predictor.session(state).bank(state, 2)
        assert all(bank.keep_idx_for(out).shape[-1] == 32 for out in outputs.values())  # half of 8x8


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
def test_reverse_tracks_a_late_object_backwards_from_its_prompt(kind, predictors, long_clip):
    predictor = predictors[kind]
    state = two_objects(predictor, long_clip)
    early_idx, late_idx = state["obj_id_to_idx"][1], state["obj_id_to_idx"][2]
    tracked(predictor, state)
    early_outputs = state["output_dict_per_obj"][early_idx]["non_cond_frame_outputs"]
    forward_outputs = dict(early_outputs)

    backward = tracked(predictor, state, start_frame_idx=LATE, reverse=True, only_from_prompts=True)
    assert sorted(backward) == list(range(LATE + 1))
    assert stored_frames(state, 2) == ([LATE], [t for t in range(NUM_FRAMES) if t != LATE])
    assert all(state["frames_tracked_per_obj"][late_idx][t]["reverse"] for t in range(LATE))
    # object 1 (prompted before) is not re-tracked over the frames it has from the forward pass
    assert all(early_outputs[t] is forward_outputs[t] for t in forward_outputs)
    assert not any(state["frames_tracked_per_obj"][early_idx][t]["reverse"] for t in range(1, NUM_FRAMES))

    # object 2's frames before its prompt are those of a run in which it is alone
    alone_state = late_object_alone(predictor, long_clip)
    tracked(predictor, alone_state)
    alone = tracked(predictor, alone_state, start_frame_idx=LATE, reverse=True)
    late_row = list(state["obj_ids"]).index(2)
    for frame in range(LATE):
        assert torch.equal(backward[frame][late_row], alone[frame][0]), frame
        assert (backward[frame][late_row] > NO_OBJ_SCORE / 2).all()  # really tracked, not empty

    # without only_from_prompts a reverse pass re-tracks frames already tracked, as sam2 does
    tracked(predictor, state, start_frame_idx=LATE, reverse=True)
    assert all(state["frames_tracked_per_obj"][early_idx][t]["reverse"] for t in range(1, LATE + 1))
    assert all(early_outputs[t] is not forward_outputs[t] for t in range(1, LATE + 1))


@pytest.mark.parametrize("early_frame, late_frame", [(0, 3), (2, 4)])
def test_segment_labels_are_each_objects_own_output_on_every_frame_once(
    early_frame, late_frame, predictors, tmp_path, monkeypatch
):
    predictor = predictors["baseline"]
    source = VideoSource.open(CHAIR_FRAMES)
    yielded = []
    original = segment.propagate_from_prompts

    def recording(*args, **kwargs):
        for item in original(*args, **kwargs):
            yielded.append(item[0])
            yield item

    monkeypatch.setattr(segment, "propagate_from_prompts", recording)
    prompts = [
        ObjectPrompt(obj_id=1, frame=early_frame, points=(tuple(EARLY_CLICK),), labels=(1,)),
        ObjectPrompt(obj_id=2, frame=late_frame, points=(tuple(LATE_CLICK),), labels=(1,)),
    ]
    segment_video(predictor, source, prompts, tmp_path / "out")
    assert sorted(yielded) == list(range(len(source)))  # every frame, once

    # each object alone: forward from its prompt, then backwards from it
    own: dict[int, dict[int, torch.Tensor]] = {}
    for prompt in prompts:
        state = predictor.init_state(source)
        predictor.add_new_points_or_box(state, prompt.frame, prompt.obj_id, points=[list(prompt.points[0])], labels=[1])
        own[prompt.obj_id] = tracked(predictor, state)
        own[prompt.obj_id].update(tracked(predictor, state, start_frame_idx=prompt.frame, reverse=True))
        assert sorted(own[prompt.obj_id]) == list(range(len(source)))
    # the test is sharp: the late object is visible before its prompt frame
    assert any((own[2][t] > 0).any() for t in range(late_frame))
    for frame, name in enumerate(source.frame_names):
        expected = labels_from_logits([1, 2], torch.cat([own[1][frame], own[2][frame]]))
        assert np.array_equal(read_label_png(tmp_path / "out" / f"{name}.png"), expected), frame


def test_eval_tracker_with_a_late_object_and_a_correction_before_it(predictors):
    """Object 2 appears on frame 3; a corrective click on frame 1 re-tracks from there."""
    predictor = predictors["pruned"]
    source = VideoSource.open(CHAIR_FRAMES)
    chair = [read_label_png(CHAIR_MASKS / f"{name}.png") for name in source.frame_names]
    truth = []
    for frame, labels in enumerate(chair):
        labels = (labels > 0).astype(np.uint8)
        if frame >= 3:
            labels[300:420, 450:650] = 2
        truth.append(labels)
    sequence = Sequence(
        name="late",
        source=source,
        annotated={frame: (lambda labels=labels: labels) for frame, labels in enumerate(truth)},
        obj_ids=[1, 2],
        first_frames={1: 0, 2: 3},
    )
    sessions = []
    tracker = SequenceTracker(
        predictor,
        sequence,
        ProtocolConfig(refine_below=1.0, max_rounds=1),
        on_prompted=lambda _predictor, state, _masks: sessions.append(state),
        bounded_memory=False,  # the state is inspected below
    )
    corrected = []

    def worst_is_object_1_on_frame_1():
        corrected.append(True)
        return [(0.0, 1, 1)]

    tracker._refinement_candidates = worst_is_object_1_on_frame_1
    labels, stats = tracker.run()
    assert corrected and stats["refinement_rounds"] == 1 and stats["clicks"] > 2
    (state,) = sessions
    # neither the first pass (from frame 0) nor the one from the corrected frame 1 tracked object 2 before frame 3
    assert stored_frames(state, 2) == ([3], [4, 5])
    assert sorted(state["frames_tracked_per_obj"][state["obj_id_to_idx"][2]]) == [3, 4, 5]
    assert sorted(labels) == list(range(6))
    assert all(2 not in labels[frame] for frame in range(3))
    # the labels are the predictor's outputs, unmasked: object 2 shows from frame 3 on as tracked
    for frame in range(3, 6):
        logits = segment.stored_frame_logits(predictor, state, frame)
        assert np.array_equal(labels[frame], labels_from_logits(list(state["obj_ids"]), logits)), frame
