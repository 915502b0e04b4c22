"""The location prior: where the object was, on the token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prompt_mask(
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    *,
    size: tuple[int, int],
    image_size: int,
) -> torch.Tensor | None:
    """Rasterise positive clicks and boxes of SAM 2 point inputs onto a ``size`` grid.

    Args:
        point_coords: ``[B, P, 2]`` (x, y) in model pixels (0..image_size), SAM 2's
            ``point_inputs["point_coords"]``; boxes are label 2 (top-left) + 3 (bottom-right).
        point_labels: ``[B, P]`` int: 1 positive, 0 negative, 2/3 box corners, -1 padding.
        size: ``(h, w)`` of the output grid.

    Returns:
        ``[B, 1, h, w]`` float in {0, 1}, or None without point inputs.
    """
    if point_coords is None or point_labels is None:
        return None
    height, width = size
    batch = point_coords.shape[0]
    mask = torch.zeros(batch, 1, height, width, device=point_coords.device)
    scale = torch.tensor([width / image_size, height / image_size], device=point_coords.device)
    cells = (point_coords.float() * scale).floor().long()
    cells[..., 0].clamp_(0, width - 1)
    cells[..., 1].clamp_(0, height - 1)
    for b in range(batch):
        labels = point_labels[b].tolist()
        for p, label in enumerate(labels):
            x, y = cells[b, p].tolist()
            if label == 1:
                mask[b, 0, y, x] = 1.0
            elif label == 2 and p + 1 < len(labels) and labels[p + 1] == 3:
                x1, y1 = cells[b, p + 1].tolist()
                mask[b, 0, y : y1 + 1, x : x1 + 1] = 1.0
    return mask


def prior_scores(mask_logits: torch.Tensor, grid: tuple[int, int], *, dilation: int) -> torch.Tensor:
    """Per-token prior from a mask: its covered fraction, plus the dilated fraction.

    Tokens inside the object score up to 2, tokens within ``dilation`` cells of it up to 1,
    all others 0.

    Args:
        mask_logits: ``[B, 1, h, w]`` mask logits (> 0 is the object) at any resolution.
        grid: ``(H, W)`` token grid.
        dilation: ring width in tokens.

    Returns:
        ``[B, H*W]`` float.
    """
    foreground = (mask_logits > 0).float()
    covered = F.adaptive_avg_pool2d(foreground, grid)
    dilated = F.max_pool2d(covered, 2 * dilation + 1, stride=1, padding=dilation) if dilation else covered
    return (covered + dilated).flatten(1)
