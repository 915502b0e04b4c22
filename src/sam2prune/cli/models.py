"""``sam2prune models``: the official SAM 2 models, their checkpoint files and which are here."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from sam2prune.cli.common import Command


def models() -> None:
    """Print each official model's checkpoint file, input size and whether the checkpoint is in
    ./checkpoints/, then where to download the checkpoints."""
    from sam2prune.models import CHECKPOINT_DIR, MODELS, official_input_size

    rows = [("model", "checkpoint file", "input size", f"in ./{CHECKPOINT_DIR}/")]
    for name, spec in MODELS.items():
        path = CHECKPOINT_DIR / spec.checkpoint_file
        here = _found(path) if path.is_file() else "-"
        rows.append((name, spec.checkpoint_file, f"{official_input_size(spec)} px", here))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
    print(
        f"\ncheckpoints: {MODELS['sam2.1_hiera_t'].checkpoint_url.rsplit('/', 1)[0]}/<file> (SAM 2.1), "
        f"{MODELS['sam2_hiera_t'].checkpoint_url.rsplit('/', 1)[0]}/<file> (SAM 2); put them in ./{CHECKPOINT_DIR}/ "
        "or pass --checkpoint FILE"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command has no options."""


def handle(args: argparse.Namespace) -> int:
    models()
    return 0


COMMAND = Command(
    run=models,
    add_arguments=add_arguments,
    handle=handle,
    help="list the SAM 2 models, their checkpoint files and which are in ./checkpoints/",
    description=(
        "The official SAM 2 and SAM 2.1 models --model accepts: checkpoint file name, input size, and whether "
        "the checkpoint is in ./checkpoints/ (where sam2's download script puts it; found there, it is used "
        "without --checkpoint)."
    ),
    examples=("sam2prune models",),
)


def _found(path: Path) -> str:
    """A checkpoint file found, with its size: a download that stopped short shows (the
    smallest official checkpoint is about 150 MiB, and a torch file is a zip whose directory
    is at its end)."""
    from sam2prune.models import is_legacy_torch_file

    size = path.stat().st_size
    if size < 2**20:
        return f"found, but {size} bytes: an incomplete download?"
    if not zipfile.is_zipfile(path) and not is_legacy_torch_file(path):  # reads only the ends of the file
        return "found, but incomplete: download it again"
    return f"found ({size / 2**20:.0f} MiB)"
