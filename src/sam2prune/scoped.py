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
