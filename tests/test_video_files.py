"""Video files read in any order give the frames they decode to from the start, whatever the
container says about its timestamps."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sam2prune.cli import embedded_clip
from sam2prune.data.frames import FrameSource, preprocess_frame
from sam2prune.data.video import FrameReader, VideoSource

FRAMES = 60


def _encode(path: Path, codec: str, *, container: str | None = None, gop: int = 12, options: dict | None = None):
    """The embedded clip, played forwards and backwards to ``FRAMES`` frames at 96x64, encoded
    with B-frames."""
    clip = VideoSource.open(embedded_clip()).looped(FRAMES)
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.gop_size = gop
        stream.codec_context.max_b_frames = 2
        stream.options = options or {}
        for frame in clip.iter_frames():
            small = np.asarray(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(96, 64).to_ndarray())
            for packet in stream.encode(av.VideoFrame.from_ndarray(small, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return VideoSource.open(path)


def test_frames_of_an_mpeg_program_stream_read_alone_are_the_frames_decoded_in_order(tmp_path):
    """An MPEG-1 program stream with B-frames labels the frames after a seek with other frames'
    timestamps (frame 12 came back as frame 10's image; the last two frames 'ended'): a frame
    reached by seeking is checked against its checksum, and the reader decodes from the start
    instead."""
    source = _encode(tmp_path / "clip.mpg", "mpeg1video", container="mpeg")
    assert source.frame_pts is not None and len(source) == FRAMES  # its timestamps look usable
    in_order = list(source.iter_frames())
    for index in [12, 30, 59, 58, 1, 0]:
        with FrameReader(source) as reader:
            assert np.array_equal(next(reader.read([index]))[1], in_order[index]), index
    frames = FrameSource(source, 32, read_ahead=3, cache_frames=5)
    for index in [*range(FRAMES - 1, -1, -1), 40, 20]:
        assert torch.equal(frames[index], preprocess_frame(in_order[index], 32)), index
    frames.close()


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_frames_of_common_containers_are_sought_to(tmp_path, suffix):
    """Where timestamps are right, frames are sought to (a frame far ahead or behind is not
    decoded from the start) and are the frames decoded in order."""
    source = _encode(tmp_path / f"clip.{suffix}", "libx264", gop=10, options={"bf": "2"})
    in_order = list(source.iter_frames())
    with FrameReader(source) as reader:
        for index in [55, 5, 45, 20]:
            assert np.array_equal(next(reader.read([index]))[1], in_order[index]), index
        assert reader.seeks and reader.decoded < 55 + 4 * 10


def test_a_video_without_usable_timestamps_decodes_on_to_frames_ahead(tmp_path):
    """H.264 with B-frames in AVI has timestamps out of order: the reader cannot seek, so frames
    ahead, however far, are decoded on from where it is (not from the start again)."""
    source = _encode(tmp_path / "clip.avi", "libx264", options={"bf": "2"})
    assert source.frame_pts is None
    in_order = list(source.iter_frames())
    with FrameReader(source) as reader:
        for index in [2, 50, 59]:
            assert np.array_equal(next(reader.read([index]))[1], in_order[index]), index
        assert reader.decoded == FRAMES
        assert np.array_equal(next(reader.read([10]))[1], in_order[10])
        assert reader.decoded == FRAMES + 11


def test_images_of_other_kinds_in_a_folder_of_frames_are_named(tmp_path, caplog, monkeypatch):
    """A folder of JPEG frames with a WebP and a BMP among them: they are not frames, and the
    user is told which files were left out (they were dropped silently)."""
    import shutil

    from conftest import CHAIR_FRAMES

    frames = tmp_path / "frames"
    shutil.copytree(CHAIR_FRAMES, frames)
    (frames / "00006.webp").write_bytes(b"RIFF")
    (frames / "00007.bmp").write_bytes(b"BM")
    monkeypatch.setattr(logging.getLogger("sam2prune"), "propagate", True)  # `main` sets it False
    with caplog.at_level("WARNING", logger="sam2prune"):
        source = VideoSource.open(frames)
    assert len(source) == 6
    assert "2 images not read as frames (frames are JPEG or PNG files): 00006.webp, 00007.bmp" in caplog.text
