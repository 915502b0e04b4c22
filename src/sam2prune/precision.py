"""The precision tracking runs in: SAM 2's GPU examples track under bfloat16 autocast."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def bf16_autocast(enabled: bool, device_type: str = "cuda") -> AbstractContextManager:
    """bfloat16 autocast on ``device_type`` when ``enabled``, else a context that changes nothing."""
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else nullcontext()
