"""Frames as SAM 2's image encoder takes them: resized to the model's square input size and
normalised as sam2's own frame loader does, from any ``VideoSource`` — read when tracking
reaches them (``FrameSource``), or all at once (``load_frames_tensor``)."""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from sam2prune.data.video import FrameReader, VideoSource
from sam2prune.errors import InputError
from sam2prune.progress import progress as progress_bar


@lru_cache(maxsize=1)
def image_normalisation() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel, as ``sam2.utils.misc.load_video_frames`` normalises frames
    by default (read from its signature, not copied)."""
    from sam2.utils.misc import load_video_frames

    parameters = inspect.signature(load_video_frames).parameters
    return tuple(parameters["img_mean"].default), tuple(parameters["img_std"].default)


def resize_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """One RGB frame ``[H, W, 3]`` uint8 resized as sam2 resizes a JPEG frame (PIL bilinear, to
    S x S, S = ``image_size``): ``[3, S, S]`` uint8."""
    return torch.from_numpy(np.array(Image.fromarray(frame).resize((image_size, image_size)))).permute(2, 0, 1)


def normalise_frame(resized: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
    """A resized frame ``[3, S, S]`` uint8 as the encoder input, float32 on its device, exactly
    as sam2 reads a JPEG frame: each value looked up in ``normalisation_table`` (one gather, on
    any device the same bits; a GPU's division by a number would multiply by its reciprocal).

    Args:
        table: ``normalisation_table()`` on the frame's device (made here when not given: on a
            GPU, a copy from the host).
    """
    if table is None:
        table = normalisation_table().to(resized.device)
    return table.gather(1, resized.flatten(1).long()).view(resized.shape)


def normalisation_table() -> torch.Tensor:
    """``[3, 256]`` float32: what sam2 makes of each uint8 value of each RGB channel (scaled to
    [0, 1] in float64 as numpy divides, then normalised in float32 by ``image_normalisation``)."""
    mean, std = image_normalisation()
    scaled = (torch.arange(256, dtype=torch.float64) / 255.0).float()
    table = scaled.repeat(3, 1)
    table -= torch.tensor(mean, dtype=torch.float32)[:, None]
    table /= torch.tensor(std, dtype=torch.float32)[:, None]
    return table


def preprocess_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """One RGB frame ``[H, W, 3]`` uint8 as the encoder input ``[3, S, S]`` float32 (S =
    ``image_size``), exactly as sam2 reads a JPEG frame (``resize_frame``, ``normalise_frame``)."""
    return normalise_frame(resize_frame(frame, image_size))


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


class FrameSource:
    """The frames of a video as the image encoder takes them, decoded and preprocessed when
    they are asked for: what sam2 reads as ``inference_state["images"]`` (``len(images)`` and
    ``images[frame_idx]``, a ``[3, S, S]`` float32 tensor), without a tensor of the whole video.

    A background thread reads ahead ``read_ahead`` frames in the direction of the last two
    requests (forward or reverse), and the last ``cache_frames`` frames are kept, so tracking
    in either direction reads each frame once and a frame asked for again soon (a click on the
    frame just tracked) is not read again. Frames are handed out on ``device``: the compute
    device, or the CPU when the video is offloaded (sam2's ``offload_video_to_cpu``).

    For a GPU, frames are kept resized as uint8 in pinned host memory and normalised on the
    device when asked for (``uint8_frames``): the copy is 4x smaller and asynchronous, and the
    background thread never touches the device (it would wait for the tracking's own work).
    The values are the same bits as the float32 frames read on the CPU. Resizing a frame to the
    model's size takes ~20 ms at 1024 px, longer than a tracked frame on a GPU: there, several
    threads resize the decoded frames (``workers``).

    Args:
        source: the video.
        image_size: S, the model's input size.
        device: where frames are handed out.
        read_ahead: frames read ahead of the last request.
        cache_frames: frames kept, at least ``read_ahead + 2``.
        uint8_frames: keep frames as uint8 and normalise each when it is asked for (4x less
            memory); default: on a CUDA device.
        workers: threads that resize (and normalise) decoded frames; default: 1 on the CPU
            (tracking there is slower than reading), up to 4 otherwise.

    Attributes:
        reads: how many times each frame was read and preprocessed, by frame index.
    """

    def __init__(
        self,
        source: VideoSource,
        image_size: int,
        *,
        device: torch.device | str = "cpu",
        read_ahead: int = 4,
        cache_frames: int = 8,
        uint8_frames: bool | None = None,
        workers: int | None = None,
    ) -> None:
        if read_ahead < 0 or cache_frames < read_ahead + 2:
            raise ValueError(f"cache_frames ({cache_frames}) must be >= read_ahead ({read_ahead}) + 2")
        self.source = source
        self.image_size = image_size
        self.device = torch.device(device)
        self.read_ahead = read_ahead
        self.cache_frames = cache_frames
        self.uint8_frames = self.device.type == "cuda" if uint8_frames is None else uint8_frames
        if workers is None:
            workers = 1 if self.device.type == "cpu" else min(4, os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None  # with several workers
        with torch.inference_mode(False):  # used in or out of inference mode
            self._table = normalisation_table().to(self.device)
        self.reads: Counter[int] = Counter()
        self._state = threading.Condition()
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._wanted: list[int] = []  # to read, the frame asked for first
        self._reading: set[int] = set()
        self._errors: dict[int, BaseException] = {}
        self._waiting: Counter[int] = Counter()  # threads waiting for each frame
        self._worker: threading.Thread | None = None
        self._last: int | None = None
        self._step = 1  # +1 forward, -1 in reverse
        self._reader: FrameReader | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Frame ``index`` ``[3, S, S]`` float32 on ``device`` (normalised now from uint8, on
        ``device``, with ``uint8_frames``).

        Raises:
            IndexError: out of range.
            InputError: the frame cannot be read (naming it).
        """
        if not isinstance(index, int | np.integer):
            raise TypeError(f"frames are read one at a time, by integer index; got {type(index).__name__}")
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range (the video has {len(self)} frames)")
        with self._state:
            if self._last is not None and index != self._last:
                self._step = 1 if index > self._last else -1
            self._last = index
            if not self._waiting[index]:  # an earlier read's error is not this request's: read it again
                self._errors.pop(index, None)
            if index not in self._cache and index not in self._reading:
                if index in self._wanted:
                    self._wanted.remove(index)
                self._wanted.insert(0, index)
            self._schedule_read_ahead(index)
            self._start_worker()
            self._waiting[index] += 1
            try:
                while index not in self._cache and index not in self._errors:
                    if index not in self._reading and index not in self._wanted:
                        # no longer to be read (``close`` dropped it, or the frame it had read)
                        self._wanted.insert(0, index)
                        self._start_worker()
                    self._state.wait()
            finally:
                self._waiting[index] -= 1
                if not self._waiting[index]:
                    del self._waiting[index]
            if index not in self._cache:
                # every thread waiting for the frame gets its error; the last one takes it away
                raise self._errors[index] if self._waiting[index] else self._errors.pop(index)
            self._cache.move_to_end(index)
            frame = self._cache[index]
        if self.uint8_frames:  # from pinned memory on a GPU: asynchronous
            return normalise_frame(frame.to(self.device, non_blocking=frame.is_pinned()), self._table)
        return frame

    def _schedule_read_ahead(self, index: int) -> None:
        ahead = [index + self._step * k for k in range(1, self.read_ahead + 1)]
        ahead = [t for t in ahead if 0 <= t < len(self) and t not in self._cache and t not in self._reading]
        # what was read ahead for another position or direction is not wanted any more (what
        # another thread waits for still is)
        self._wanted = [t for t in self._wanted if t == index or t in ahead or self._waiting[t]]
        self._wanted += [t for t in ahead if t not in self._wanted]

    def _start_worker(self) -> None:
        if self._wanted and (self._worker is None or not self._worker.is_alive()):
            # not a daemon: at exit Python waits for it to finish the few frames it was asked
            # for, instead of killing it inside the video decoder
            self._worker = threading.Thread(target=self._work, name="sam2prune-frames", daemon=False)
            self._worker.start()

    def _work(self) -> None:
        """Read what is wanted, a sweep at a time, until nothing is (the reader stays open, so
        that the next frames of a video file are decoded on instead of sought to)."""
        while True:
            with self._state:
                if not self._wanted:
                    self._worker = None
                    return
                batch = self._wanted[: self.read_ahead + 1]
                del self._wanted[: len(batch)]
                try:
                    if self._reader is None:
                        self._reader = FrameReader(self.source)
                    if self._pool is None and self.workers > 1:
                        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sam2prune-resize")
                except BaseException as error:  # nothing to read with: whoever waits for the batch gets the error
                    for index in batch:
                        self._errors[index] = error
                    self._state.notify_all()
                    continue  # the next batch tries again (its waiters must be answered too)
                self._reading.update(batch)
                reader = self._reader
                pool = self._pool
            decoded = set()  # handed on to be resized: their errors are their own
            try:
                for index, frame in reader.read(batch):
                    if pool is None:
                        self._store(index, frame)
                    else:
                        try:
                            pool.submit(self._store, index, frame)
                        except RuntimeError as error:  # the pool is shut down (the interpreter exits)
                            self._give_up([i for i in batch if i not in decoded], error, reader)
                            return
                    decoded.add(index)
            except BaseException as error:  # the frame that failed gets the error; the rest are read again
                undecoded = sorted(index for index in batch if index not in decoded)  # read in ascending order
                self._give_up(undecoded[:1], error, reader, read_again=undecoded[1:])

    def _give_up(
        self, indices: list[int], error: BaseException, reader: FrameReader, *, read_again: Sequence[int] = ()
    ) -> None:
        """Hand ``error`` to whoever waits for ``indices``, put ``read_again`` back to be read
        (by a new reader), and close ``reader``."""
        with self._state:
            self._reading.difference_update([*indices, *read_again])
            for index in indices:
                self._errors[index] = error
            self._wanted[:0] = [index for index in read_again if index not in self._wanted]
            self._reader = None
            self._state.notify_all()
        with contextlib.suppress(Exception):  # it failed already
            reader.close()

    def _store(self, index: int, frame: np.ndarray) -> None:
        """Resize a decoded frame and cache what is kept of it (or the error, for whoever waits,
        naming the frame as decode errors do: an ``InputError`` where PIL cannot resize it; any
        other error keeps its type, with a note naming the frame, since it is not the frame's
        fault and callers tell it by its type: out of memory, a device error)."""
        try:
            try:
                resized = resize_frame(frame, self.image_size)
            except MemoryError:
                raise
            except Exception as error:
                label = self.source.frame_label(index)
                raise InputError(f"frame {label} cannot be resized to {self.image_size}px: {error}") from error
            image = self._kept(resized)
        except BaseException as error:
            if not isinstance(error, InputError):
                error.add_note(f"while preprocessing frame {self.source.frame_label(index)}")
            with self._state:
                self._reading.discard(index)
                self._errors[index] = error
                self._state.notify_all()
            return
        with self._state:
            self.reads[index] += 1
            self._reading.discard(index)
            self._cache[index] = image
            self._trim_cache()
            self._state.notify_all()

    def _kept(self, resized: torch.Tensor) -> torch.Tensor:
        """What the cache keeps of a resized frame (on the reading thread)."""
        if not self.uint8_frames:
            return normalise_frame(resized).to(self.device)
        return resized.pin_memory() if self.device.type == "cuda" else resized

    def close(self) -> None:
        """Drop the cached frames and close the video file (reading again reopens it). A thread
        waiting for a frame meanwhile still gets it: read again, by a reader opened anew."""
        with self._state:
            # the frames being read or resized are finished first
            while True:
                reading = self._worker is not None and self._worker.is_alive()
                if not ((self._reading and (reading or self._pool is not None)) or (reading and self._wanted)):
                    break
                self._wanted.clear()
                self._state.wait(timeout=0.1)
            self._cache.clear()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            self._state.notify_all()  # whoever waits asks again for what was dropped

    def __del__(self) -> None:
        """A video file's decoder is closed with its source (sam2's state has no close: it is
        dropped), not when the garbage collector finds PyAV's reference cycle."""
        reader = getattr(self, "_reader", None)
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()

    def _trim_cache(self) -> None:
        """Drop the least recently used frames beyond ``cache_frames``, never the one asked for
        last nor one a thread waits for."""
        for index in list(self._cache):
            if len(self._cache) <= self.cache_frames:
                break
            if index != self._last and not self._waiting[index]:
                del self._cache[index]
