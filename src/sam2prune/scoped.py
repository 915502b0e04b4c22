"""Values scoped to one call: context variables set for the duration of a ``with`` block.

sam2's call chains (``track_step`` -> memory attention -> its RoPE attentions; the image
encoder -> its blocks) have no parameter through which sam2prune could pass what it needs down
the chain. A context variable set around the one call carries it instead: nothing is stored on
the modules, and the value is gone when the call returns (also on an error). Likewise
``seeded``: torch's global RNG seeded for one block, and as it was after it.
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
    """Inside the block, torch's CPU generator starts from ``seed``; after it, it is as it was:
    random initial weights drawn without touching the caller's RNG. Weights are drawn on the CPU
    (sam2 builds a model there, then moves it), so no CUDA generator is read or seeded: that
    would start CUDA on every GPU (``torch.manual_seed`` also seeds every CUDA device, and does
    so when CUDA starts if it has not yet)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
