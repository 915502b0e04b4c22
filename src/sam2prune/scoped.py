"""Values scoped to one call: context variables set for the duration of a ``with`` block.

sam2's call chains (``track_step`` -> memory attention -> its RoPE attentions; the image
encoder -> its blocks) have no parameter through which sam2prune could pass what it needs down
the chain. A context variable set around the one call carries it instead: nothing is stored on
the modules, and the value is gone when the call returns (also on an error).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


@contextmanager
def scoped(variable: ContextVar[T | None], value: T) -> Iterator[T]:
    """Set ``variable`` to ``value`` inside the block, then restore what it was."""
    token = variable.set(value)
    try:
        yield value
    finally:
        variable.reset(token)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block, torch's global generators (the CPU's and every CUDA device's) start
    from ``seed``; after it, all of them are as they were: random initial weights drawn without
    touching the caller's RNG. (``torch.manual_seed`` seeds every CUDA device, so forking only
    the CPU, or only the model's device, would leave the others reseeded.)"""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
