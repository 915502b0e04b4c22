"""Reading videos: a folder of JPEG/PNG frames (natural sort of names) or a video file."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sam2prune.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"})


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path) -> list[Path]:
    """JPEG/PNG files of a folder in natural order (hidden files ignored)."""
    files = [
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
    return sorted(files, key=lambda path: natural_key(path.name))


@dataclass
class VideoSource:
    """A validated video: frame count, size, and the names used for per-frame outputs.

    Attributes:
        path: the folder or video file.
        frame_names: one stem per frame (file stems for a folder, ``00000``... for a file).
        width, height: frame size in pixels; every frame has it.
    """

    path: Path
    frame_names: list[str]
    width: int
    height: int
    frame_files: list[Path] = field(default_factory=list)  # empty for a video file
    fps: float | None = None  # frame rate of a video file; None for a folder

    @property
    def is_video_file(self) -> bool:
        return not self.frame_files

    def __len__(self) -> int:
        return len(self.frame_names)

    @classmethod
    def open(cls, path: str | Path) -> VideoSource:
        """Check that ``path`` is a readable video and read its frame names and size.

        Raises:
            InputError: naming the path or frame that is missing, empty, unreadable, or of a
                size different from the first frame.
        """
        path = Path(path)
        if not path.exists():
            raise InputError(f"video {path} does not exist")
        if path.is_dir():
            return cls._open_folder(path)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return cls._open_video_file(path)
        raise InputError(
            f"video {path} is neither a folder of JPEG/PNG frames nor a video file "
            f"({', '.join(sorted(VIDEO_SUFFIXES))})"
        )

    @classmethod
    def _open_folder(cls, folder: Path) -> VideoSource:
        files = list_frame_files(folder)
        if not files:
            raise InputError(f"video folder {folder} holds no JPEG or PNG frames")
        stems = [path.stem for path in files]
        if len(set(stems)) != len(stems):
            duplicate = next(stem for stem in stems if stems.count(stem) > 1)
            raise InputError(
                f"video folder {folder} has several frames named {duplicate} (e.g. .jpg and .png); "
                "frame names must be unique"
            )
        sizes = [_image_size(path) for path in files]
        first = sizes[0]
        for path, size in zip(files, sizes, strict=False):
            if size != first:
                raise InputError(
                    f"frame {path} is {size[0]}x{size[1]} but {files[0].name} is {first[0]}x{first[1]}; "
                    "all frames of a video must have the same size"
                )
        return cls(path=folder, frame_names=stems, width=first[0], height=first[1], frame_files=files)

    @classmethod
    def _open_video_file(cls, path: Path) -> VideoSource:
        import av

        count = 0
        size = None
        for frame in _decode_video(path):
            if size is None:
                size = (frame.shape[1], frame.shape[0])
            count += 1
        if count == 0 or size is None:
            raise InputError(f"video {path} holds no frames")
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
        return cls(
            path=path,
            frame_names=[f"{i:05d}" for i in range(count)],
            width=size[0],
            height=size[1],
            fps=float(rate) if rate else None,
        )

    def head(self, count: int) -> VideoSource:
        """The same video cut to its first ``count`` frames."""
        if not 1 <= count <= len(self):
            raise InputError(f"cannot take {count} frames of {self.path}: it has {len(self)} (1..{len(self)})")
        return replace(self, frame_names=self.frame_names[:count], frame_files=self.frame_files[:count])

    def looped(self, count: int) -> VideoSource:
        """The frames played forwards, then backwards, and so on, until ``count`` frames (a
        folder of frames only): a longer clip without a cut, for benchmarks.

        Raises:
            InputError: a video file, or ``count`` < 1.
        """
        if count < 1:
            raise InputError(f"cannot take {count} frames of {self.path}")
        if count <= len(self):
            return self.head(count)
        if self.is_video_file:
            raise InputError(
                f"{count} frames asked of {self.path}, which has {len(self)}: only a folder of frames is looped"
            )
        cycle = list(range(len(self))) + list(range(len(self) - 2, 0, -1)) or [0]
        order = [cycle[i % len(cycle)] for i in range(count)]
        return replace(
            self,
            frame_names=[f"{i:05d}" for i in range(count)],
            frame_files=[self.frame_files[i] for i in order],
        )

    def iter_frames(self) -> Iterator[np.ndarray]:
        """Frames in order as RGB uint8 arrays ``[H, W, 3]``.

        Raises:
            InputError: naming a frame that cannot be decoded or whose size changed.
        """
        frames: Iterator[np.ndarray]
        if self.is_video_file:
            frames = itertools.islice(_decode_video(self.path), len(self))
        else:
            frames = (read_rgb(path) for path in self.frame_files)
        for index, frame in enumerate(frames):
            if frame.shape[:2] != (self.height, self.width):
                raise InputError(
                    f"frame {self.frame_label(index)} is {frame.shape[1]}x{frame.shape[0]}, expected "
                    f"{self.width}x{self.height} like the first frame"
                )
            yield frame

    def frame_label(self, index: int) -> str:
        """How error messages name frame ``index``: its file, or its index in the video file."""
        if self.is_video_file:
            return f"{index} of {self.path}"
        return str(self.frame_files[index])


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"frame {path} cannot be read as an image: {error}") from error


def read_rgb(path: Path) -> np.ndarray:
    """Decode one image file fully as RGB ``[H, W, 3]`` uint8.

    Raises:
        InputError: naming the file when it is corrupt or truncated.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise InputError(f"frame {path} is corrupt or unreadable: {error}") from error


def _decode_video(path: Path) -> Iterator[np.ndarray]:
    import av

    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"video {path} has no video stream")
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
                decoded += 1
    except av.FFmpegError as error:
        raise InputError(f"video {path} cannot be decoded (after {decoded} frames): {error}") from error
