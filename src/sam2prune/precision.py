"""The precision tracking runs in: SAM 2's GPU examples track under bfloat16 autocast."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def bf16_autocast(enabled: bool, device: torch.device | str = "cuda") -> AbstractContextManager:
    """bfloat16 autocast on ``device`` (a device or its type, e.g. ``predictor.device``) when
    ``enabled``, else a context that changes nothing.

    Raises:
        ValueError: ``enabled`` for a device that is not a CUDA device (autocast on CUDA would
            leave its computation in float32, silently).
    """
    if not enabled:
        return nullcontext()
    device_type = torch.device(device).type
    if device_type != "cuda":
        raise ValueError(f"bf16 autocast is for CUDA devices; {device_type} is not one (track in float32 there)")
    return torch.autocast(device_type, dtype=torch.bfloat16)
