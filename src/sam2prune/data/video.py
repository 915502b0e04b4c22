"""Reading videos: a folder of JPEG/PNG frames (natural sort of names) or a video file."""

from __future__ import annotations

import itertools
import logging
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from sam2prune.errors import InputError

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# images of other kinds in a folder of frames are named (not read as frames)
OTHER_IMAGE_SUFFIXES = frozenset({".bmp", ".webp", ".tif", ".tiff", ".gif", ".jp2", ".ppm", ".heic"})
log = logging.getLogger("sam2prune")
EXIF_ORIENTATION = 0x0112  # the EXIF tag of how a viewer turns or mirrors the stored picture
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"})


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path) -> list[Path]:
    """JPEG/PNG files of a folder in natural order (hidden files ignored).

    Raises:
        InputError: a frame's name is a link to nothing (a frame left out would shift the
            numbers of every later frame).
    """
    files = []
    for path in folder.iterdir():
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.is_symlink() and not path.exists():
            raise InputError(f"frame {path} is a link to {os.readlink(path)}, which does not exist")
        if path.is_file():
            files.append(path)
    # names the key finds equal (f1 and f01, F1 and f1) in one order whatever the file system's
    return sorted(files, key=lambda path: (natural_key(path.name), path.name))


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
    # ``frame_checksum`` of each frame of a video file as it decodes from the start: what
    # identifies a frame reached by seeking, and a frame is handed out only when its checksum is
    # the same (None for a folder)
    frame_checksums: list[int] | None = None
    # (index, presentation timestamp in its stream's time base) of each keyframe of a video
    # file that has one, in order: where random access seeks to (empty: none)
    seek_points: list[tuple[int, int]] = field(default_factory=list)

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
        try:
            files = list_frame_files(folder)
        except OSError as error:  # no permission to list it: the error alone named no input
            raise InputError(f"video folder {folder} cannot be read: {error.strerror or error}") from error
        if not files:
            folders = sorted(
                entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")
            )
            hint = (
                f"; it holds folders ({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''}): a video is one "
                "folder of frames (for a dataset, check that --dataset names its layout)"
                if folders
                else ""
            )
            raise InputError(f"video folder {folder} holds no JPEG or PNG frames{hint}")
        others = sorted(
            (
                p.name
                for p in folder.iterdir()
                if p.suffix.lower() in OTHER_IMAGE_SUFFIXES and not p.name.startswith(".")
            ),
            key=natural_key,
        )
        if others:
            log.warning(
                "video folder %s: %s not read as frames (frames are JPEG or PNG files): %s",
                folder,
                "an image" if len(others) == 1 else f"{len(others)} images",
                ", ".join(others[:3]) + (", ..." if len(others) > 3 else ""),
            )
        stems = [path.stem for path in files]
        if len(set(stems)) != len(stems):
            duplicate = next(stem for stem in stems if stems.count(stem) > 1)
            raise InputError(
                f"video folder {folder} has several frames named {duplicate} (e.g. .jpg and .png); "
                "frame names must be unique"
            )
        headers = [_image_header(path) for path in files]
        sizes = [size for size, _ in headers]
        turned = [
            path.name
            for path, (_, orientation) in zip(files, headers, strict=True)
            if orientation in range(2, 9)  # 1: as stored; 0 and others: undefined, ignored by viewers
        ]
        if turned:
            log.warning(
                "video folder %s: an EXIF orientation that photo viewers apply (turned or mirrored) in %d of %d "
                "frames (%s); frames are read as stored, %dx%d, as SAM 2 reads them: give points, boxes and masks "
                "in that orientation (masks are written in it)",
                folder,
                len(turned),
                len(files),
                ", ".join(turned[:3]) + (", ..." if len(turned) > 3 else ""),
                *sizes[0],
            )
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

        # decode every frame once (not converting it): the count, the size, each frame's
        # checksum and the keyframes' timestamps, so that frames can later be read in any order
        checksums: list[int] = []
        seek_points: list[tuple[int, int]] = []
        size = None
        for frame in _decode_video(path, convert=False):
            if size is None:
                size = (frame.width, frame.height)
                if rotation := int(getattr(frame, "rotation", 0) or 0):
                    log.warning(
                        "video %s carries a rotation flag (%d degrees) that players apply; frames are read as "
                        "stored, %dx%d: give points, boxes and masks in that orientation (masks are written in it)",
                        path,
                        rotation,
                        *size,
                    )
            elif (frame.width, frame.height) != size:
                raise InputError(
                    f"frame {len(checksums)} of {path} is {frame.width}x{frame.height}, expected "
                    f"{size[0]}x{size[1]} like the first frame"
                )
            if frame.key_frame and frame.pts is not None and len(checksums):
                seek_points.append((len(checksums), int(frame.pts)))
            checksums.append(frame_checksum(frame))
        if not checksums or size is None:
            raise InputError(f"video {path} holds no frames")
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            recorded = int(container.streams.video[0].frames or 0)  # 0: the container does not say
            # MP4/MOV edit lists (a video trimmed without re-encoding) count frames players skip
            edits = bool({"mp4", "mov"} & set(container.format.name.split(",")))
        if len(checksums) < recorded and not edits:
            log.warning(
                "video %s: its header says %d frames, %d could be decoded (a file cut short?); the video is read "
                "as %d frames",
                path,
                recorded,
                len(checksums),
                len(checksums),
            )
        return cls(
            path=path,
            frame_names=[f"{i:05d}" for i in range(len(checksums))],
            width=size[0],
            height=size[1],
            fps=float(rate) if rate else None,
            frame_checksums=checksums,
            seek_points=seek_points,
        )

    def head(self, count: int) -> VideoSource:
        """The same video cut to its first ``count`` frames."""
        if not 1 <= count <= len(self):
            raise InputError(f"cannot take {count} frames of {self.path}: it has {len(self)} (1..{len(self)})")
        return replace(
            self,
            frame_names=self.frame_names[:count],
            frame_files=self.frame_files[:count],
            frame_checksums=self.frame_checksums[:count] if self.frame_checksums is not None else None,
            seek_points=[(index, pts) for index, pts in self.seek_points if index < count],
        )

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

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as an RGB uint8 array ``[H, W, 3]``, read on its own (a video file is
        opened, sought and closed again: to read many frames, use a ``FrameReader``).

        Raises:
            InputError: naming a frame that cannot be decoded or whose size changed.
        """
        with FrameReader(self) as reader:
            return next(reader.read([index]))[1]

    def frame_label(self, index: int) -> str:
        """How error messages name frame ``index``: its file, or its index in the video file."""
        if self.is_video_file:
            return f"{index} of {self.path}"
        return str(self.frame_files[index])


class FrameReader:
    """Reads frames of a ``VideoSource`` in any order, one or several at a time. For a video
    file it keeps the file open between reads: frames that follow the last one read are
    decoded on, others are sought to (the nearest keyframe before, then decoded up to the frame;
    without keyframe timestamps, decoded from the start).

    Where a seek lands is told by the checksum of the frame found there, not by its timestamp
    (MPEG program streams with B-frames label the frames after a seek with other frames'
    timestamps), and a frame is handed out only when its checksum is the one it has decoded from
    the start; otherwise the reader decodes from the start, and seeks no more. The checksum is of
    the luma: frames that differ only in colour pass for each other (harmless where a seek lands
    among identical frames, such as a black lead-in). Not thread-safe: one reader per thread.

    Attributes:
        decoded: frames decoded so far (including those decoded only to reach another).
    """

    def __init__(self, source: VideoSource) -> None:
        self.source = source
        self.decoded = 0
        self._container: InputContainer | None = None
        self._frames: Iterator[VideoFrame] | None = None  # the open decoder
        self._next_index = 0  # index of the frame the open decoder yields next
        self._indices_of: dict[int, list[int]] = {}  # frame indices by checksum
        for index, checksum in enumerate(source.frame_checksums or ()):
            self._indices_of.setdefault(checksum, []).append(index)
        # False once a frame reached by seeking was not the frame it was taken for
        self.seeks = bool(source.seek_points) and source.frame_checksums is not None
        self._sought = False  # the open decoder was positioned by a seek, not started at frame 0

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = None

    def read(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, RGB uint8 [H, W, 3])`` of each index, in ascending order (video files are
        decoded forward in one sweep).

        Raises:
            InputError: an index out of range, or a frame that cannot be decoded or whose size
                differs from the first frame's (naming it).
        """
        for index in sorted(set(indices)):
            if not 0 <= index < len(self.source):
                raise InputError(f"frame {index} is out of range: {self.source.path} has {len(self.source)} frames")
            frame = read_rgb(self.source.frame_files[index]) if not self.source.is_video_file else self._decode(index)
            if frame.shape[:2] != (self.source.height, self.source.width):
                raise InputError(
                    f"frame {self.source.frame_label(index)} is {frame.shape[1]}x{frame.shape[0]}, expected "
                    f"{self.source.width}x{self.source.height} like the first frame"
                )
            if not self.source.is_video_file:
                self.decoded += 1
            yield index, frame

    # frames decoded on (rather than sought to) when the wanted one is at most this far ahead
    _DECODE_ON = 32

    def _decode(self, index: int) -> np.ndarray:
        import av

        try:
            # without seeking, any frame ahead is decoded on
            ahead = self._next_index + (self._DECODE_ON if self.seeks else len(self.source))
            if self._frames is None or not self._next_index <= index <= ahead:
                self._seek(index)
            assert self._frames is not None  # _seek opens the decoder
            restarted = False
            while True:
                frame = next(self._frames, None)
                if frame is not None:
                    self.decoded += 1
                elif restarted or not self._sought:  # a seek may have miscounted: from the start
                    raise InputError(f"video {self.source.path} ended before frame {index}")
                current = self._next_index
                checksums = self.source.frame_checksums
                if frame is None or (
                    current == index and checksums is not None and frame_checksum(frame) != checksums[index]
                ):
                    if restarted:
                        raise InputError(f"video {self.source.path} decodes differently from when it was opened")
                    # the decoder is not where the seek was taken to land: from the start, seeking no more
                    self.seeks = False
                    self._seek(0)
                    restarted = True
                    continue
                self._next_index += 1
                if current == index:
                    return frame.to_ndarray(format="rgb24")
        except av.FFmpegError as error:
            self.close()
            raise InputError(f"frame {self.source.frame_label(index)} cannot be decoded: {error}") from error

    def _seek(self, index: int) -> None:
        """Position the decoder at or before frame ``index``: from the start, or at the last
        keyframe before it whose seek lands on a frame known by its checksum, at or before it
        (a seek may land on an earlier keyframe, or a later one: then the one before is tried)."""
        import av

        self.close()
        container = self._container = av.open(str(self.source.path))
        stream = container.streams.video[0]
        self._frames, self._next_index, self._sought = container.decode(stream), 0, False
        if not self.seeks:
            return
        targets = [point for point in self.source.seek_points if point[0] <= index][-self._SEEK_TRIES :]
        for keyframe, pts in reversed(targets):
            container.seek(pts, backward=True, any_frame=False, stream=stream)
            frames = container.decode(stream)
            first = next(frames, None)
            if first is None:
                continue
            candidates = self._indices_of.get(frame_checksum(first), [])
            landed = min((i for i in candidates if i <= index), key=lambda i: abs(i - keyframe), default=None)
            if landed is not None:  # the first frame is counted as decoded when it is yielded
                self._frames, self._next_index, self._sought = itertools.chain([first], frames), landed, True
                return
            self.decoded += 1
        # nowhere known at or before it: from the start
        self.close()
        container = self._container = av.open(str(self.source.path))
        self._frames = container.decode(container.streams.video[0])

    # keyframes tried, from the last before the frame backwards, before decoding from the start
    _SEEK_TRIES = 2


def frame_checksum(frame: VideoFrame) -> int:
    """CRC-32 of a decoded frame's 8-bit luma (about 1 ms at 1080p): the same for the same
    decoded frame, whatever its pixel format and row padding."""
    return zlib.crc32(frame.to_ndarray(format="gray").tobytes())


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header.

    Raises:
        InputError: naming the file when it is not a readable image.
    """
    return _image_header(path)[0]


def _image_header(path: Path) -> tuple[tuple[int, int], int | None]:
    """(width, height) of an image file and its EXIF orientation (None: none), from its header.

    Raises:
        InputError: naming the file when it is not a readable image.
    """
    try:
        with Image.open(path) as image:
            # only EXIF read with the header (a PNG's getexif() may decode the whole picture)
            orientation = image.getexif().get(EXIF_ORIENTATION) if "exif" in image.info else None
            return image.size, orientation
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"frame {path} cannot be read as an image: {error}") from error


def read_rgb(path: Path, *, what: str = "frame", label: bool = False) -> np.ndarray:
    """Decode one image file fully as RGB ``[H, W, 3]`` uint8; a 16-bit greyscale image by its
    top 8 bits (a ``label`` map keeps its small values instead).

    Raises:
        InputError: naming the file (as ``what``) when it is corrupt or truncated.
    """
    try:
        with Image.open(path) as image:
            if image.mode in WIDE_GREY_MODES and not label:
                # PIL's RGB conversion clips every value above 255: a 16-bit frame would be
                # nearly all white (as sam2's own loader reads it); its top 8 bits instead
                values = np.asarray(image).astype(np.int64)
                if path.parent not in _DARK_FOLDERS_SAID:
                    _say_if_dark(values, path, what)
                grey = (values >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise InputError(f"{what} {path} is corrupt or unreadable: {error}") from error


def _say_if_dark(values: np.ndarray, path: Path, what: str) -> None:
    """Warn (once per folder) when a 16-bit image uses no more than its low 12 bits: read by its
    top 8, it is black or nearly (8-bit pictures saved as 16 bits, or 10- or 12-bit data such as
    medical or raw camera frames)."""
    bits = int(values.max(initial=0)).bit_length()
    if bits > 12:
        return
    _DARK_FOLDERS_SAID.add(path.parent)
    if bits <= 8:
        log.warning(
            "%s %s: a 16-bit greyscale image whose values are all below 256 reads black (16-bit frames are read "
            "by their top 8 bits): 8-bit pictures saved as 16 bits? save them as 8-bit PNGs",
            what,
            path,
        )
    else:
        log.warning(
            "%s %s: a 16-bit greyscale image whose values are all below %d reads dark, at most %d of 255 "
            "(16-bit frames are read by their top 8 bits): %d-bit data? scale it to 8-bit PNGs as you would view it",
            what,
            path,
            1 << bits,
            (1 << (bits - 8)) - 1,
            bits,
        )


# greyscale of 16 bits (PNG; "I" where PIL widens them to 32)
WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_DARK_FOLDERS_SAID: set[Path] = set()  # folders of 16-bit images that read black, said once each


def _decode_video(path: Path, *, convert: bool = True) -> Iterator:
    """Frames of a video file in order: RGB uint8 arrays ``[H, W, 3]``, or PyAV frames when
    not ``convert``."""
    import av

    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"video {path} has no video stream")
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24") if convert else frame
                decoded += 1
    except av.FFmpegError as error:
        if decoded == 0 and path.is_file() and path.stat().st_size == 0:
            raise InputError(f"video {path} is an empty file (0 bytes)") from error
        raise InputError(f"video {path} cannot be decoded (after {decoded} frames): {error}") from error
