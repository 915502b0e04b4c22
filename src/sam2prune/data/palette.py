"""Indexed-palette PNG label maps, DAVIS convention: 0 background, k = object id k."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write


@lru_cache(maxsize=1)
def davis_palette() -> np.ndarray:
    """The 256-colour palette of DAVIS annotations (the PASCAL VOC colour map), ``[256, 3]`` uint8.

    Colour of index i: bit b of i's three lowest-bit groups sets bit (7 - b//3) of R, G, B.
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write a ``[H, W]`` uint8 label map as an indexed-palette PNG (atomically: temp + rename)."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D uint8 array, got {labels.dtype} {labels.shape}")
    image = Image.fromarray(labels, mode="P")
    image.putpalette(davis_palette().tobytes())
    atomic_write(Path(path), lambda temp: image.save(temp, format="PNG"), clean_stale=False)


LABEL_MODES = ("P", "L", "1")  # the image modes a label map is read from


@contextmanager
def _label_image(path: Path, what: str) -> Iterator[Image.Image]:
    """The label map PNG ``path`` opened, checked to be a single-channel label image; errors
    opening or reading it in the block name it as ``what``.

    Raises:
        InputError: the file is missing, unreadable or not a single-channel label image.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in LABEL_MODES:
                raise InputError(
                    f"{what} {path} is an image of mode {image.mode}; expected an indexed-palette or greyscale PNG"
                )
            yield image
    except FileNotFoundError as error:
        raise InputError(f"{what} {path} does not exist") from error
    except OSError as error:
        raise InputError(f"{what} {path} cannot be read: {error}") from error


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label map PNG as ``[H, W]`` uint8 (palette indices; grey values for mode L).

    Raises:
        InputError: the file is missing, unreadable or not a single-channel label image.
    """
    with _label_image(Path(path), "mask") as image:
        return np.array(image, dtype=np.uint8)  # a 1-bit image: 0 and 1


def label_png_size(path: Path, *, what: str = "mask") -> tuple[int, int]:
    """(width, height) of a label map PNG from its header, checked as ``read_label_png`` checks
    it (naming it as ``what``) without decoding it.

    Raises:
        InputError: the file is missing, unreadable or not a single-channel label image.
    """
    with _label_image(path, what) as image:
        return image.size
