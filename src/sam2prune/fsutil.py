"""Writing outputs without leaving anything half-written behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sam2prune.errors import InputError


def check_output_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Raises InputError if ``out_dir`` is a file, or a non-empty folder without ``overwrite``,
    or if its parent folder does not exist."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"output folder {out_dir} is not empty; pass --overwrite to replace it")
    if not out_dir.parent.is_dir():
        raise InputError(f"output folder {out_dir}: parent folder {out_dir.parent} does not exist")


@contextmanager
def staged_directory(out_dir: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir``; on success it replaces ``out_dir``,
    on any error it is removed and ``out_dir`` is left as it was."""
    check_output_dir(out_dir, overwrite=overwrite)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / out_dir.name)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
