"""Shared fixtures: small real clips and tiny random-weight models (fixed seeds)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
CHAIR_FRAMES = DATA / "chair" / "JPEGImages"
CHAIR_MASKS = DATA / "chair" / "Annotations"
TINY_SIZE = 128  # 8x8 token grid: fast, enough for plumbing tests
SMALL_SIZE = 256  # 16x16 token grid: enough for pruning tests
# CI runs on the CPU; on a GPU machine `SAM2PRUNE_TEST_DEVICE=cuda pytest tests/test_pruning.py`
# reruns the invariance tests there (benchmarks/gpu.sh does).
TEST_DEVICE = os.environ.get("SAM2PRUNE_TEST_DEVICE", "cpu")


def build_random(image_size: int = TINY_SIZE, model: str = "sam2.1_hiera_t", seed: int = 0, **kwargs):
    from sam2prune import build_predictor

    return build_predictor(model, random_weights=True, seed=seed, image_size=image_size, **kwargs)


@pytest.fixture(scope="session")
def tiny_predictor():
    return build_random()


@pytest.fixture
def chair_copy(tmp_path: Path) -> Path:
    """A writable copy of the 6 chair frames."""
    target = tmp_path / "chair"
    shutil.copytree(CHAIR_FRAMES, target)
    return target


@pytest.fixture(autouse=True)
def _limit_threads():
    # two cores: two threads, or one per worker when pytest-xdist runs two (scripts/check.sh)
    torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def last_error(capsys) -> str:
    """The one-line error the CLI printed last (no traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("sam2prune: error: "), lines
    assert "Traceback" not in "\n".join(lines)
    return lines[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path: its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
