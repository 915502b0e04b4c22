"""Visualisation: masks over frames, written as an MP4 or GIF."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from sam2prune.data.palette import davis_palette
from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write, check_output_file, is_within

log = logging.getLogger("sam2prune")

OVERLAY_SUFFIXES = (".mp4", ".gif")


def check_overlay_path(
    path: Path,
    *,
    out_dir: Path | None = None,
    inputs: Iterable[tuple[str, Path]] = (),
    overwrite: bool | None = None,
) -> None:
    """Raises InputError unless ``path`` ends in .mp4 or .gif and can be written: not
    ``out_dir`` (the masks' folder, replaced as a whole) nor inside it, and as
    ``fsutil.check_output_file`` (not one of ``inputs`` nor inside one; existing only with
    ``overwrite``)."""
    if out_dir is not None:
        overlay, masks = path.resolve(), Path(out_dir).resolve()
        if is_within(overlay, masks):
            relation = "is" if overlay == masks else "lies inside"
            raise InputError(
                f"--overlay {path} {relation} --out {out_dir}, the folder of the masks (replaced as a whole); "
                "write the overlay elsewhere"
            )
    if path.suffix.lower() not in OVERLAY_SUFFIXES:
        raise InputError(f"--overlay {path}: expected a .mp4 or .gif file name")
    check_output_file(path, option="--overlay", inputs=inputs, overwrite=overwrite)


def overlay_labels(frame: np.ndarray, labels: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """Blend each object's palette colour over its pixels.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        labels: ``[H, W]`` uint8 label map (0 = background).

    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    colours = davis_palette()[labels].astype(np.float32)
    blended = frame.astype(np.float32)
    inside = labels > 0
    blended[inside] = (1 - alpha) * blended[inside] + alpha * colours[inside]
    return blended.round().astype(np.uint8)


def write_overlay(path: Path, frames: Iterable[np.ndarray], *, fps: float = 10.0) -> None:
    """Write RGB frames as an MP4 (H.264) or GIF, atomically (temporary file, then rename)."""
    if path.suffix.lower() == ".gif":
        atomic_write(path, lambda temp: _write_gif(temp, frames, fps))
    else:
        atomic_write(path, lambda temp: _write_mp4(temp, frames, fps, name=path.name))


def _write_gif(path: Path, frames: Iterable[np.ndarray], fps: float) -> None:
    # one RGB frame at a time: PIL keeps each as it converts it to 256 colours (a third of its size)
    remaining = iter(frames)
    first = Image.fromarray(next(remaining))
    rest = (Image.fromarray(frame) for frame in remaining)
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=gif_frame_ms(fps), loop=0)


def gif_frame_ms(fps: float) -> int:
    """How long a GIF shows each frame at ``fps``, in ms: GIF counts whole hundredths of a second
    (PIL truncates, so 15 fps played at 16.7), and browsers play a delay under 2 as 10 (50 fps
    at most)."""
    centiseconds = round(100 / fps)
    if fps > 50:
        log.warning(
            "overlay: a GIF plays at most 50 fps (browsers slow faster ones to 10 fps); written at 50, not %g", fps
        )
    return 10 * max(2, centiseconds)


def _write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float, *, name: str) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            # yuv420p needs even sizes: repeat the last row/column where needed
            height, width = frame.shape[:2]
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            if stream is None and (height % 2 or width % 2):
                log.info(
                    "overlay %s: frames of %dx%d written as %dx%d (H.264 needs even sizes: the last %s repeated)",
                    name,
                    width,
                    height,
                    frame.shape[1],
                    frame.shape[0],
                    " and ".join(part for part, odd in (("column", width % 2), ("row", height % 2)) if odd),
                )
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
