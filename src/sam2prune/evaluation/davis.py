"""Semi-supervised scoring of a results folder against DAVIS-layout ground truth, writing the
official CSV files. Works for any method's outputs (palette PNGs named like the GT)."""

from __future__ import annotations

import collections.abc
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam2prune.data.datasets import annotation_files, lists_beside, read_names
from sam2prune.data.palette import read_label_png
from sam2prune.errors import InputError
from sam2prune.evaluation.metrics import boundary_f, jaccard, statistics
from sam2prune.fsutil import atomic_write_text
from sam2prune.progress import progress as progress_bar
from sam2prune.wording import counted

VOID_LABEL = 255
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass
class ObjectScores:
    """Per-frame J and F of one object over the evaluated frames, and their statistics."""

    name: str  # "<sequence>_<object id>"
    j: np.ndarray
    f: np.ndarray

    def summary(self) -> dict[str, float]:
        j_mean, j_recall, j_decay = statistics(self.j)
        f_mean, f_recall, f_decay = statistics(self.f)
        return {
            "J-Mean": j_mean,
            "J-Recall": j_recall,
            "J-Decay": j_decay,
            "F-Mean": f_mean,
            "F-Recall": f_recall,
            "F-Decay": f_decay,
        }


def score_sequence(
    name: str,
    gt_frames: collections.abc.Sequence[np.ndarray],
    result_frames: collections.abc.Sequence[np.ndarray],
    *,
    bound_th: float = 0.008,
) -> list[ObjectScores]:
    """Score one sequence as the official semi-supervised evaluation does.

    Args:
        name: sequence name.
        gt_frames: every ground-truth label map ``[H, W]`` uint8 (255 = void, read as background).
        result_frames: the predicted label maps of the evaluated frames (all but the first and
            last), in the same order. Both are read one frame at a time (they may read lazily).

    Returns:
        One ``ObjectScores`` per ground-truth object (ids 1..max id of the first GT frame).

    Raises:
        InputError: too few frames, or more predicted objects than ground-truth objects.
    """
    if len(gt_frames) < 3:
        raise InputError(f"sequence {name}: {len(gt_frames)} annotated frames; the evaluation needs at least 3")
    num_objects = int(np.where(gt_frames[0] == VOID_LABEL, 0, gt_frames[0]).max())
    evaluated = min(len(result_frames), len(gt_frames) - 2)
    j = np.zeros((num_objects, evaluated))
    f = np.zeros((num_objects, evaluated))
    num_predicted = 0
    for index in range(evaluated):
        gt = gt_frames[index + 1]
        gt = np.where(gt == VOID_LABEL, 0, gt)
        result = result_frames[index]
        num_predicted = max(num_predicted, int(result.max()))
        if num_predicted > num_objects:
            break
        for obj_id in range(1, num_objects + 1):
            j[obj_id - 1, index] = jaccard(gt == obj_id, result == obj_id)
            f[obj_id - 1, index] = boundary_f(gt == obj_id, result == obj_id, bound_th=bound_th)
    if num_predicted > num_objects:
        raise InputError(
            f"sequence {name}: the results hold object id {num_predicted} but the ground truth has "
            f"{counted(num_objects, 'object')} in its first frame"
        )
    return [
        ObjectScores(name=f"{name}_{obj_id}", j=j[obj_id - 1], f=f[obj_id - 1]) for obj_id in range(1, num_objects + 1)
    ]


def read_sequence_list(gt_root: Path, set_name: str) -> list[str]:
    """Sequence names of ``ImageSets/2017/<set>.txt``, as the official evaluation reads them.

    Raises:
        InputError: the list does not exist or is empty.
    """
    image_set = gt_root / "ImageSets" / "2017" / f"{set_name}.txt"
    if not image_set.is_file():
        raise InputError(
            f"--set {set_name}: sequence list {image_set} does not exist ({lists_beside(image_set)}); pass --set NAME of a list there, "
            "or --sequences NAME [NAME ...]"
        )
    names = read_names(image_set)
    if not names:
        raise InputError(f"--set {set_name}: sequence list {image_set} is empty")
    return names


def score_results(
    gt_root: Path,
    results_dir: Path,
    *,
    set_name: str = "val",
    sequences: list[str] | None = None,
    progress: bool = True,
) -> tuple[dict[str, float], list[ObjectScores]]:
    """Score a results folder (``<results>/<sequence>/<frame>.png``) against DAVIS-layout ground
    truth (``<gt_root>/Annotations/480p/<sequence>/<frame>.png``).

    Returns:
        (global measures keyed as the official CSV, per-object scores).

    Raises:
        InputError: missing folders or PNGs (named), size mismatches, extra objects.
    """
    if not results_dir.is_dir():
        raise InputError(f"--results {results_dir}: folder does not exist")
    names = sequences if sequences is not None else read_sequence_list(gt_root, set_name)
    all_scores: list[ObjectScores] = []
    for name in progress_bar(names, desc="scoring", unit="sequence", disable=not progress):
        gt_dir = gt_root / "Annotations" / "480p" / name
        gt_files = annotation_files(gt_dir) if gt_dir.is_dir() else []
        if not gt_files:
            raise InputError(f"sequence {name}: no ground-truth PNGs in {gt_dir}")
        gt_frames = [read_label_png(path) for path in gt_files]
        for path, frame in zip(gt_files, gt_frames, strict=True):
            if frame.shape != gt_frames[0].shape:
                raise InputError(
                    f"ground truth {path} is {frame.shape[1]}x{frame.shape[0]} but {gt_files[0].name} is "
                    f"{gt_frames[0].shape[1]}x{gt_frames[0].shape[0]}"
                )
        if not (results_dir / name).is_dir():
            raise InputError(
                f"sequence {name}: no results folder {results_dir / name} (score the sequences that have results "
                "with --sequences)"
            )
        result_frames = []
        for path in gt_files[1:-1]:
            # named like the ground truth; .png where the ground truth has .PNG
            result_path = next(
                (p for p in (results_dir / name / f"{path.stem}.png", results_dir / name / path.name) if p.is_file()),
                results_dir / name / path.name,
            )
            if not result_path.is_file():
                raise InputError(f"sequence {name}: result {result_path} is missing")
            frame = read_label_png(result_path)
            if frame.shape != gt_frames[0].shape:
                raise InputError(
                    f"result {result_path} is {frame.shape[1]}x{frame.shape[0]} but the ground truth is "
                    f"{gt_frames[0].shape[1]}x{gt_frames[0].shape[0]}"
                )
            result_frames.append(frame)
        all_scores += score_sequence(name, gt_frames, result_frames)
    return global_measures(all_scores), all_scores


def global_measures(scores: list[ObjectScores]) -> dict[str, float]:
    """Plain means over all objects; J&F-Mean = (J-Mean + F-Mean) / 2."""
    if not scores:
        raise InputError("nothing to score: no objects")
    summaries = [s.summary() for s in scores]
    measures = {key: float(np.mean([s[key] for s in summaries])) for key in GLOBAL_COLUMNS[1:]}
    return {"J&F-Mean": (measures["J-Mean"] + measures["F-Mean"]) / 2, **measures}


def official_csv_names(set_name: str) -> tuple[str, str, str]:
    """The files ``write_official_csvs`` writes."""
    return f"global_results-{set_name}.csv", f"per-sequence_results-{set_name}.csv", "summary.json"


def write_official_csvs(out_dir: Path, set_name: str, measures: dict[str, float], scores: list[ObjectScores]) -> None:
    """``global_results-<set>.csv``, ``per-sequence_results-<set>.csv`` (3 decimals, as the
    official tool writes them) and ``summary.json`` (full precision)."""
    global_csv = ",".join(GLOBAL_COLUMNS) + "\n" + ",".join(f"{measures[k]:.3f}" for k in GLOBAL_COLUMNS) + "\n"
    per_object = ["Sequence,J-Mean,F-Mean"]
    summary_objects = {}
    for score in scores:
        summary = score.summary()
        per_object.append(f"{score.name},{summary['J-Mean']:.3f},{summary['F-Mean']:.3f}")
        summary_objects[score.name] = {"J-Mean": summary["J-Mean"], "F-Mean": summary["F-Mean"]}
    global_name, per_sequence_name, summary_name = official_csv_names(set_name)
    atomic_write_text(out_dir / global_name, global_csv)
    atomic_write_text(out_dir / per_sequence_name, "\n".join(per_object) + "\n")
    atomic_write_text(out_dir / summary_name, json.dumps({**measures, "per_object": summary_objects}, indent=2))
