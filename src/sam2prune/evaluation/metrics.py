"""DAVIS 2017 semi-supervised metrics, numpy only, reproducing the official evaluation
(davisvideochallenge/davis2017-evaluation) exactly, quirks included: see shared METRICS.md."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.ndimage import binary_dilation

DECAY_BINS = 4


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J: |G ∩ P| / |G ∪ P| over non-void pixels; 1 when the union is empty.

    Args:
        gt, pred: ``[H, W]`` masks (non-zero = object).
        void: ``[H, W]`` pixels to ignore, or None.
    """
    gt, pred = gt.astype(bool), pred.astype(bool)
    valid = ~void.astype(bool) if void is not None else np.ones_like(gt)
    intersection = np.count_nonzero(gt & pred & valid)
    union = np.count_nonzero((gt | pred) & valid)
    return 1.0 if union == 0 else intersection / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a mask as the official ``_seg2bmap`` finds them.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour;
    on the last row only the right neighbour counts, on the last column only the lower one, and
    the bottom-right pixel never is. Outside the image is not background.

    Args:
        mask: ``[H, W]`` (non-zero = object).

    Returns:
        ``[H, W]`` bool.
    """
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    boundary[-1, :] = seg[-1, :] ^ east[-1, :]
    boundary[:, -1] = seg[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def disk(radius: int) -> np.ndarray:
    """All integer offsets with dx² + dy² <= radius², as a ``[2r+1, 2r+1]`` bool footprint."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Dilation radius: ``bound_th`` pixels if >= 1, else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(*shape))


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    """Contour accuracy F: F-measure of boundary precision and recall within a tolerance.

    Void pixels are zeroed in both masks before boundaries are taken. Both boundaries empty: 1;
    exactly one empty: 0.

    Args:
        gt, pred: ``[H, W]`` masks (non-zero = object).
        void: ``[H, W]`` pixels to ignore, or None.
        bound_th: tolerance, as a fraction of the diagonal (< 1) or in pixels (>= 1).
    """
    gt, pred = gt.astype(bool), pred.astype(bool)
    if void is not None:
        keep = ~void.astype(bool)
        gt, pred = gt & keep, pred & keep
    footprint = disk(boundary_tolerance(pred.shape, bound_th))
    pred_boundary = boundary_map(pred)
    gt_boundary = boundary_map(gt)
    num_pred = np.count_nonzero(pred_boundary)
    num_gt = np.count_nonzero(gt_boundary)
    if num_pred == 0 and num_gt == 0:
        return 1.0
    if num_pred == 0 or num_gt == 0:
        return 0.0
    precision = np.count_nonzero(pred_boundary & binary_dilation(gt_boundary, footprint)) / num_pred
    recall = np.count_nonzero(gt_boundary & binary_dilation(pred_boundary, footprint)) / num_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def decay_bin_edges(num_frames: int) -> list[int]:
    """The official decay bin edges ``round(linspace(1, n, 5) + 1e-10) - 1``.

    The official code stores them as uint8 and so breaks past 256 frames; these indices are
    identical below that and do not wrap above it.
    """
    return [int(v) for v in np.round(np.linspace(1, num_frames, DECAY_BINS + 1) + 1e-10) - 1]


def statistics(per_frame: np.ndarray | list[float]) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame values, as the official ``db_statistics``.

    Mean = nanmean(v); Recall = mean(v > 0.5); Decay = mean(bin 0) - mean(bin 3) over 4 bins
    that share their end frames.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    with warnings.catch_warnings():  # "mean of empty slice", silenced as the official code does
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        edges = decay_bin_edges(len(values))
        bins = [values[edges[i] : edges[i + 1] + 1] for i in range(DECAY_BINS)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[DECAY_BINS - 1]))
    return mean, recall, decay
