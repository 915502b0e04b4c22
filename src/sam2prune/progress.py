"""Progress on long work: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns (and cursor-up codes for nested bars), which turns a
log file or a CI transcript into one unreadable line. When stderr is not a terminal, progress is
printed as whole lines instead, at most every ``interval`` seconds and once at the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class LineProgress(Generic[T]):
    """The part of tqdm's interface this package uses, writing one line per report."""

    def __init__(
        self,
        iterable: Iterable[T] | None,
        *,
        desc: str,
        total: int | None,
        unit: str,
        interval: float = 10.0,
        stream: Any = None,
    ) -> None:
        self.iterable = iterable
        self.desc, self.total, self.unit, self.interval = desc, total, unit, interval
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last = -float("inf")

    def _write(self) -> None:
        elapsed = time.monotonic() - self._start
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        postfix = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {count} {self.unit}s, {elapsed:.1f} s{postfix}", file=self.stream or sys.stderr, flush=True
        )
        self._last = time.monotonic()

    def update(self, count: int = 1) -> None:
        self.n += count
        finished = self.total is not None and self.n >= self.total
        if finished or time.monotonic() - self._last >= self.interval:
            self._write()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self.total is None or self.n < self.total:
            self._write()

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable cannot be iterated")
        self._write()
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    disable: bool = False,
) -> Any:
    """A progress bar over ``iterable``: tqdm on a terminal, ``LineProgress`` otherwise,
    nothing with ``disable``."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if disable or sys.stderr is None:
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit)
    return LineProgress(iterable, desc=desc, total=total, unit=unit)


@contextlib.contextmanager
def quiet_model_loading() -> Iterator[None]:
    """transformers' own progress bars (e.g. "Loading weights") off while the block loads a
    model, unless stderr is a terminal: redrawn with carriage returns, they garble a log."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # nothing of transformers' to quieten
        yield
        return
    if sys.stderr is not None and sys.stderr.isatty():
        yield
        return
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def sam2_progress_in_lines() -> Iterator[None]:
    """sam2's own "propagate in video" bar (``SAM2VideoPredictor``, run by ``bench`` as the
    reference) as ``progress`` shows ours while the block runs: plain lines unless stderr is a
    terminal."""
    import sam2.sam2_video_predictor as official

    if sys.stderr is not None and sys.stderr.isatty():
        yield
        return
    original = official.tqdm

    def lines(iterable: Iterable[T], desc: str = "", **_: Any) -> Any:
        return progress(iterable, desc=desc, unit="frame")

    official.tqdm = lines
    try:
        yield
    finally:
        official.tqdm = original
