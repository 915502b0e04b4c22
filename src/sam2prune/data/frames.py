"""Frames as SAM 2's image encoder takes them: resized to the model's square input size and
normalised as sam2's own frame loader does, from any ``VideoSource``."""

from __future__ import annotations

import inspect
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from sam2prune.data.video import VideoSource
from sam2prune.progress import progress as progress_bar


@lru_cache(maxsize=1)
def image_normalisation() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel, as ``sam2.utils.misc.load_video_frames`` normalises frames
    by default (read from its signature, not copied)."""
    from sam2.utils.misc import load_video_frames

    parameters = inspect.signature(load_video_frames).parameters
    return tuple(parameters["img_mean"].default), tuple(parameters["img_std"].default)


def preprocess_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """One RGB frame ``[H, W, 3]`` uint8 as the encoder input ``[3, S, S]`` float32 (S =
    ``image_size``): a PIL bilinear resize to S x S, scaled to [0, 1], normalised, exactly as
    sam2 reads a JPEG frame."""
    mean, std = image_normalisation()
    resized = np.array(Image.fromarray(frame).resize((image_size, image_size))) / 255.0
    image = torch.from_numpy(resized).permute(2, 0, 1).float()
    image -= torch.tensor(mean, dtype=torch.float32)[:, None, None]
    image /= torch.tensor(std, dtype=torch.float32)[:, None, None]
    return image


def load_frames_tensor(source: VideoSource, image_size: int, *, progress: bool = True) -> torch.Tensor:
    """Read every frame of ``source`` as the encoder takes it.

    Returns:
        ``[T, 3, image_size, image_size]`` float32.

    Raises:
        InputError: naming a frame that is corrupt or of a different size.
    """
    images = torch.zeros(len(source), 3, image_size, image_size, dtype=torch.float32)
    frames = progress_bar(
        source.iter_frames(), desc="reading frames", total=len(source), unit="frame", disable=not progress
    )
    for index, frame in enumerate(frames):
        images[index] = preprocess_frame(frame, image_size)
    return images
