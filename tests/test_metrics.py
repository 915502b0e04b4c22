"""The DAVIS metrics on hand-checked cases (values worked out from the official definitions in
shared METRICS.md), against a slow independent implementation, and `sam2prune score` on
constructed result folders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam2prune.cli import main
from sam2prune.data.palette import write_label_png
from sam2prune.evaluation.davis import score_sequence
from sam2prune.evaluation.metrics import (
    boundary_f,
    boundary_map,
    boundary_tolerance,
    decay_bin_edges,
    disk,
    jaccard,
    statistics,
)


def grid(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


# --- J -------------------------------------------------------------------------------------


def test_jaccard_cases():
    gt = grid(["##..", "##..", "....", "...."])
    pred = grid(["###.", "###.", "....", "...."])
    assert jaccard(gt, pred) == 4 / 6
    assert jaccard(gt, gt) == 1.0
    empty = np.zeros((4, 4), bool)
    assert jaccard(empty, empty) == 1.0  # empty union
    assert jaccard(gt, empty) == 0.0
    assert jaccard(grid(["##.."]), grid(["#.#."]), void=grid(["..#."])) == 0.5
    assert jaccard(grid(["#..."]), grid(["...."]), void=grid(["#..."])) == 1.0  # all of the union void


# --- boundaries ------------------------------------------------------------------------------


def test_boundary_of_a_lone_interior_pixel_is_four_pixels():
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = True
    expected = np.zeros((5, 5), bool)
    expected[1:3, 1:3] = True  # itself, left, above, above-left: boundary sits towards the origin
    assert np.array_equal(boundary_map(mask), expected)


def test_boundary_of_a_lone_pixel_at_the_origin_is_itself():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    assert np.argwhere(boundary_map(mask)).tolist() == [[0, 0]]


def test_image_border_is_no_boundary():
    assert not boundary_map(np.ones((6, 7), bool)).any()
    left = grid(["##....", "##....", "##...."])
    assert np.argwhere(boundary_map(left)).tolist() == [[0, 1], [1, 1], [2, 1]]
    bottom_right = np.zeros((4, 4), bool)
    bottom_right[3, 3] = True  # only its left and upper neighbours see it
    assert np.argwhere(boundary_map(bottom_right)).tolist() == [[2, 2], [2, 3], [3, 2]]


def test_disk_and_tolerance():
    assert disk(1).sum() == 5 and disk(2).sum() == 13
    assert boundary_tolerance((480, 854)) == 8  # DAVIS 480p
    assert boundary_tolerance((100, 100)) == 2
    assert boundary_tolerance((100, 100), bound_th=3) == 3


# --- F -------------------------------------------------------------------------------------


def test_boundary_f_hand_checked():
    gt = grid(["###.....", "###.....", "###....."])  # boundary: column 2
    assert boundary_f(gt, grid(["####....", "####....", "####...."]), bound_th=1) == 1.0  # 1 px away
    assert boundary_f(gt, grid(["#####...", "#####...", "#####..."]), bound_th=1) == 0.0  # 2 px away
    # boundary {(0,3), (1,3), (1,4), (1,5), (2,5)}: precision 2/5, recall 2/3, F = 0.5
    pred = grid(["####....", "####....", "######.."])
    assert np.argwhere(boundary_map(pred)).tolist() == [[0, 3], [1, 3], [1, 4], [1, 5], [2, 5]]
    assert boundary_f(gt, pred, bound_th=1) == pytest.approx(0.5, abs=1e-12)


def test_boundary_f_empty_cases():
    empty = np.zeros((10, 10), bool)
    square = np.zeros((10, 10), bool)
    square[3:6, 3:6] = True
    full = np.ones((10, 10), bool)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(square, empty) == 0.0 and boundary_f(empty, square) == 0.0
    # a full-image GT has no boundary, and neither has an empty prediction
    assert jaccard(full, empty) == 0.0 and boundary_f(full, empty) == 1.0


def test_boundary_f_with_void_zeroes_both_masks_first():
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    pred = gt.copy()
    pred[5:15, 15:18] = True  # wrong right edge ...
    void = np.zeros((20, 20), bool)
    void[:, 12:] = True  # ... inside the void band: both masks end at the same column
    assert boundary_f(gt, pred, bound_th=1) < 1.0
    assert boundary_f(gt, pred, void=void, bound_th=1) == 1.0


def _slow_boundary_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """METRICS.md read literally, with loops: a second implementation to compare against."""

    def boundary(mask):
        h, w = mask.shape
        out = np.zeros_like(mask)
        for y in range(h):
            for x in range(w):
                if y == h - 1 and x == w - 1:
                    continue  # the bottom-right pixel never is a boundary
                if y == h - 1:
                    neighbours = [mask[y, x + 1]]  # last row: right only
                elif x == w - 1:
                    neighbours = [mask[y + 1, x]]  # last column: lower only
                else:
                    neighbours = [mask[y, x + 1], mask[y + 1, x], mask[y + 1, x + 1]]
                out[y, x] = any(n != mask[y, x] for n in neighbours)
        return out

    def near(points, others):
        if len(others) == 0:
            return 0
        return sum(any((py - oy) ** 2 + (px - ox) ** 2 <= radius**2 for oy, ox in others) for py, px in points)

    bp, bg = np.argwhere(boundary(pred)), np.argwhere(boundary(gt))
    if len(bp) == 0 and len(bg) == 0:
        return 1.0
    if len(bp) == 0 or len(bg) == 0:
        return 0.0
    precision, recall = near(bp, bg) / len(bp), near(bg, bp) / len(bg)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", range(6))
def test_boundary_f_matches_a_literal_implementation(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(8, 20)), int(rng.integers(8, 20)))
    gt = rng.random(shape) < 0.3
    pred = gt ^ (rng.random(shape) < 0.15)
    gt[0, :] |= seed % 2 == 0  # masks touching the border, thin structures
    pred[:, -1] = seed % 3 == 0
    radius = int(rng.integers(1, 4))
    assert boundary_f(gt, pred, bound_th=radius) == pytest.approx(_slow_boundary_f(gt, pred, radius), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_boundary_f_matches_the_official_toolkit_primitives(seed):
    """The official f_measure dilates boundary maps with cv2.dilate and skimage's disk at
    ceil(0.008 * diagonal): compute F that way at DAVIS resolution and compare."""
    import cv2
    from skimage.morphology import disk as skimage_disk

    rng = np.random.default_rng(seed)
    gt = np.zeros((480, 854), bool)
    gt[100:300, 200:500] = True
    pred = np.roll(gt, (int(rng.integers(-15, 15)), int(rng.integers(-15, 15))), axis=(0, 1))
    pred[rng.random(pred.shape) < 0.002] ^= True  # speckles: many small boundaries
    radius = boundary_tolerance(gt.shape)
    kernel = skimage_disk(radius).astype(np.uint8)
    assert np.array_equal(kernel.astype(bool), disk(radius))
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    gt_dilated = cv2.dilate(gt_b.astype(np.uint8), kernel)
    pred_dilated = cv2.dilate(pred_b.astype(np.uint8), kernel)
    precision = (pred_b * gt_dilated).sum() / pred_b.sum()
    recall = (gt_b * pred_dilated).sum() / gt_b.sum()
    reference = 2 * precision * recall / (precision + recall)
    assert boundary_f(gt, pred) == pytest.approx(reference, abs=1e-12)
    assert 0 < reference < 1


# --- statistics ----------------------------------------------------------------------------


def test_statistics_hand_checked():
    values = [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0, 0, 0]
    assert decay_bin_edges(10) == [0, 2, 5, 7, 9]
    mean, recall, decay = statistics(values)
    assert mean == pytest.approx(0.5) and recall == pytest.approx(0.3)  # 0.5 is not > 0.5
    assert decay == pytest.approx(1.0)  # mean(v[0:3]) - mean(v[7:10])
    mean, recall, decay = statistics([1.0, float("nan"), 0.0, 1.0])
    assert mean == pytest.approx(2 / 3) and recall == pytest.approx(0.5)


def test_decay_bins_do_not_wrap_past_256_frames():
    edges = decay_bin_edges(300)
    assert edges == [0, 75, 150, 224, 299]
    assert decay_bin_edges(50) == [int(v) for v in (np.round(np.linspace(1, 50, 5) + 1e-10) - 1).astype(np.uint8)]


# --- sequences and the score command ---------------------------------------------------------


def _sequence(num_frames=7, size=(48, 64)):
    frames = []
    for t in range(num_frames):
        frame = np.zeros(size, np.uint8)
        frame[10:30, 5 + t : 25 + t] = 1
        frame[5:15, 40:60] = 2
        frame[40:44, :] = 255  # void: scored as background
        frames.append(frame)
    return frames


def test_score_sequence_perfect_and_perturbed():
    gt = _sequence()
    perfect = score_sequence("s", gt, [np.where(f == 255, 0, f) for f in gt[1:-1]])
    assert [o.name for o in perfect] == ["s_1", "s_2"]
    assert all(o.summary()["J-Mean"] == 1.0 and o.summary()["F-Mean"] == 1.0 for o in perfect)
    results = [np.where(f == 255, 0, f) for f in gt[1:-1]]
    results[0] = np.where(results[0] == 2, 0, results[0])  # object 2 missed on evaluated frames 0 and 4
    results[4] = np.where(results[4] == 2, 0, results[4])
    obj1, obj2 = score_sequence("s", gt, results)
    assert obj1.summary()["J-Mean"] == 1.0
    assert obj2.j.tolist() == [0, 1, 1, 1, 0] and obj2.f.tolist() == [0, 1, 1, 1, 0]
    summary = obj2.summary()
    # 5 frames: bins [0:2] and [3:5]; decay = mean(0, 1) - mean(1, 0) = 0
    assert summary["J-Mean"] == pytest.approx(0.6) and summary["J-Recall"] == pytest.approx(0.6)
    assert summary["J-Decay"] == pytest.approx(0.0)


def test_more_predicted_objects_than_ground_truth_is_an_error():
    gt = _sequence()
    results = [np.where(f == 255, 0, f) for f in gt[1:-1]]
    results[2][0, 0] = 3
    from sam2prune.errors import InputError

    with pytest.raises(InputError, match="object id 3"):
        score_sequence("s", gt, results)


def _write_dataset(root, sequences: dict[str, list[np.ndarray]]):
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(sequences) + "\n")
    for name, frames in sequences.items():
        folder = root / "Annotations" / "480p" / name
        folder.mkdir(parents=True)
        for t, frame in enumerate(frames):
            write_label_png(folder / f"{t:05d}.png", frame)


def test_score_command_writes_the_official_csvs(tmp_path, capsys):
    gt_root, results = tmp_path / "gt", tmp_path / "results"
    first = _sequence()
    second = [np.where(f == 2, 0, f) for f in _sequence(num_frames=6)]
    _write_dataset(gt_root, {"alpha": first, "beta": second})
    for name, frames in {"alpha": first, "beta": second}.items():
        (results / name).mkdir(parents=True)
        for t, frame in enumerate(frames):
            predicted = np.where(frame == 255, 0, frame)
            if name == "alpha":
                predicted = np.where(predicted == 2, 0, predicted)  # alpha's object 2 never found
            write_label_png(results / name / f"{t:05d}.png", predicted)
    assert main(["score", "--gt-root", str(gt_root), "--results", str(results)]) == 0
    # objects: alpha_1 (1, 1), alpha_2 (0, 0), beta_1 (1, 1)
    assert (results / "global_results-val.csv").read_text() == (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n0.667,0.667,0.667,0.000,0.667,0.667,0.000\n"
    )
    assert (results / "per-sequence_results-val.csv").read_text() == (
        "Sequence,J-Mean,F-Mean\nalpha_1,1.000,1.000\nalpha_2,0.000,0.000\nbeta_1,1.000,1.000\n"
    )
    import json

    summary = json.loads((results / "summary.json").read_text())
    assert summary["J&F-Mean"] == pytest.approx(2 / 3) and summary["per_object"]["alpha_2"]["J-Mean"] == 0.0
    assert "0.667" in capsys.readouterr().out


def test_score_command_names_missing_results(tmp_path, capsys):
    gt_root, results = tmp_path / "gt", tmp_path / "results"
    _write_dataset(gt_root, {"alpha": _sequence()})
    results.mkdir()
    assert main(["score", "--gt-root", str(gt_root), "--results", str(results)]) == 2
    assert "sequence alpha: no results folder" in capsys.readouterr().err
    (results / "alpha").mkdir()
    assert main(["score", "--gt-root", str(gt_root), "--results", str(results)]) == 2
    assert "alpha/00001.png is missing" in capsys.readouterr().err
    write_label_png(results / "alpha" / "00001.png", np.zeros((10, 10), np.uint8))
    for t in range(2, 6):
        write_label_png(results / "alpha" / f"{t:05d}.png", np.zeros((48, 64), np.uint8))
    assert main(["score", "--gt-root", str(gt_root), "--results", str(results)]) == 2
    assert "is 10x10 but the ground truth is 64x48" in capsys.readouterr().err


def test_score_on_the_real_chair_masks_against_themselves(tmp_path):
    """Real DAVIS-layout masks, prediction = ground truth: 1.0 everywhere."""
    from conftest import CHAIR_MASKS

    gt_root = tmp_path / "gt"
    (gt_root / "Annotations" / "480p").mkdir(parents=True)
    import shutil

    shutil.copytree(CHAIR_MASKS, gt_root / "Annotations" / "480p" / "chair")
    results = str(gt_root / "Annotations" / "480p")
    # without ImageSets/2017/val.txt the sequences must be named: no silent "every folder"
    assert main(["score", "--gt-root", str(gt_root), "--results", results, "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "global_results-val.csv").exists()
    command = ["score", "--gt-root", str(gt_root), "--results", results, "--out", str(tmp_path)]
    assert main([*command, "--sequences", "chair", "chair"]) == 0  # a name given twice is scored once
    assert (tmp_path / "global_results-val.csv").read_text().splitlines()[
        1
    ] == "1.000,1.000,1.000,0.000,1.000,1.000,0.000"
    assert len((tmp_path / "per-sequence_results-val.csv").read_text().splitlines()) == 2
    assert math.isclose(
        float((tmp_path / "per-sequence_results-val.csv").read_text().splitlines()[1].split(",")[1]), 1.0
    )
