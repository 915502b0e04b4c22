"""Video files read in any order give the frames they decode to from the start, whatever the
container says about its timestamps."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from sam2prune.cli import embedded_clip
from sam2prune.data.frames import FrameSource, preprocess_frame
from sam2prune.data.video import FrameReader, VideoSource
from sam2prune.errors import InputError

FRAMES = 120


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


def _reverse_pass(source: VideoSource, in_order: list[np.ndarray]) -> int:
    """Read every frame backwards through a ``FrameSource``, checking each; the frames decoded."""
    frames = FrameSource(source, 32, read_ahead=3, cache_frames=5)
    for index in range(len(source) - 1, -1, -1):
        assert torch.equal(frames[index], preprocess_frame(in_order[index], 32)), index
    assert frames._reader is not None and frames._reader.seeks
    decoded = frames._reader.decoded
    frames.close()
    return decoded


@pytest.mark.parametrize(
    ("name", "codec", "container", "options"),
    [
        # labels the frames after a seek with other frames' timestamps (frame 12 came back as
        # frame 10's image; the last two frames 'ended')
        ("clip.mpg", "mpeg1video", "mpeg", {}),
        # timestamps out of order (frames 1, 3, 2, 4, ...)
        ("clip.avi", "libx264", None, {"bf": "2"}),
        ("clip.mp4", "libx264", None, {"bf": "2"}),
        ("clip.mkv", "libx264", None, {"bf": "2"}),
    ],
)
def test_frames_read_alone_or_backwards_are_the_frames_decoded_in_order(tmp_path, name, codec, container, options):
    """Each frame read alone, and every frame backwards, is the frame decoded from the start;
    seeks land where their checksum says (a reverse pass decodes each frame a few times, not
    every frame before it)."""
    source = _encode(tmp_path / name, codec, container=container, options=options)
    assert len(source) == FRAMES and source.seek_points
    in_order = list(source.iter_frames())
    for index in [12, 30, FRAMES - 1, FRAMES - 2, 1, 0]:
        with FrameReader(source) as reader:
            assert np.array_equal(next(reader.read([index]))[1], in_order[index]), index
    # MPEG's seeks land a keyframe early: 6.3 decodes a frame; from the start each time, 15
    assert _reverse_pass(source, in_order) <= 8 * FRAMES


def test_a_seek_that_miscounts_is_caught_and_the_frame_decoded_from_the_start(tmp_path):
    """A seek taken to land on another frame than it did (here: the keyframe it lands on is
    taken for the frame before it, as a container's timestamps can mislead) hands out the
    right frame all the same, decoded from the start, and the reader seeks no more; a video
    that decodes otherwise than when it was opened is an error, never another frame."""
    source = _encode(tmp_path / "clip.mp4", "libx264", gop=12, options={"bf": "2"})
    in_order = list(source.iter_frames())
    keyframe = next(index for index, _ in source.seek_points if index >= 36)
    with FrameReader(source) as reader:
        reader._indices_of[source.frame_checksums[keyframe]] = [keyframe - 1]
        assert np.array_equal(next(reader.read([keyframe + 5]))[1], in_order[keyframe + 5])
        assert not reader.seeks
    with FrameReader(source) as reader:
        checksums = list(source.frame_checksums)
        checksums[50] ^= 1  # as if frame 50 decoded otherwise now
        reader.source = replace(source, frame_checksums=checksums)
        with pytest.raises(InputError, match="decodes differently from when it was opened"):
            next(reader.read([50]))


def test_a_video_that_cannot_be_sought_decodes_on_to_frames_ahead(tmp_path):
    """Without seek points (no keyframe has a timestamp), frames ahead, however far, are decoded
    on from where the reader is (not from the start again)."""
    source = replace(_encode(tmp_path / "clip.mp4", "libx264", options={"bf": "2"}), seek_points=[])
    in_order = list(source.iter_frames())
    with FrameReader(source) as reader:
        for index in [2, 50, FRAMES - 1]:
            assert np.array_equal(next(reader.read([index]))[1], in_order[index]), index
        assert reader.decoded == FRAMES and not reader.seeks
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


def test_a_link_to_nothing_among_frames_is_named_and_16_bit_frames_keep_their_picture(tmp_path, caplog, monkeypatch):
    """A frame left out would shift every later frame's number; PIL's RGB conversion turns a
    16-bit greyscale frame white (every value above 255 clipped)."""
    from PIL import Image

    from sam2prune.data.video import read_rgb

    frames = tmp_path / "frames"
    frames.mkdir()
    grey = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21
    Image.fromarray(grey).save(frames / "00000.png")
    assert Image.open(frames / "00000.png").mode == "I;16"
    frame = VideoSource.open(frames).read_frame(0)
    assert frame.shape == (48, 64, 3) and np.array_equal(frame[..., 1], (grey >> 8).astype(np.uint8))
    assert np.array_equal(read_rgb(frames / "00000.png", label=True)[..., 0], np.minimum(grey, 255))
    Image.fromarray(np.full((48, 64), 200, np.uint16)).save(frames / "00001.png")  # 8-bit values in 16 bits
    monkeypatch.setattr(logging.getLogger("sam2prune"), "propagate", True)
    with caplog.at_level("WARNING", logger="sam2prune"):
        assert VideoSource.open(frames).read_frame(1).max() == 0
    assert "00001.png: a 16-bit greyscale image whose values are all below 256 reads black" in caplog.text
    raw = tmp_path / "raw12"  # 12-bit data (medical, raw camera frames) in 16-bit PNGs
    raw.mkdir()
    Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 4 % 4096).save(raw / "00000.png")
    with caplog.at_level("WARNING", logger="sam2prune"):
        assert VideoSource.open(raw).read_frame(0).max() == 15
    assert "00000.png: a 16-bit greyscale image whose values are all below 4096 reads dark, at most 15 of 255" in (
        caplog.text
    )
    assert "12-bit data?" in caplog.text
    (frames / "00001.png").unlink()
    (frames / "00001.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError, match=r"frame .*00001.png is a link to .*gone.png, which does not exist"):
        VideoSource.open(frames)


def test_a_frame_source_dropped_closes_its_video_file(tmp_path):
    """sam2's state is dropped, never closed: the FrameSource in it closes its video file then
    (PyAV's decoder sits in a reference cycle that held the file until a garbage collection)."""
    import threading

    source = _encode(tmp_path / "clip.mp4", "libx264", options={"bf": "2"})
    frames = FrameSource(source, 32, read_ahead=0, cache_frames=2)
    frames[3]
    for thread in threading.enumerate():  # the reading thread holds the source until it ends
        if thread.name == "sam2prune-frames":
            thread.join()
    reader = frames._reader
    assert reader is not None and reader._container is not None
    del frames
    assert reader._container is None


def test_an_overlay_of_odd_sized_frames_says_it_is_written_a_pixel_larger(tmp_path, caplog, monkeypatch):
    from sam2prune.viz import write_overlay

    frames = [np.full((33, 48, 3), 40 * i, np.uint8) for i in range(3)]
    monkeypatch.setattr(logging.getLogger("sam2prune"), "propagate", True)
    with caplog.at_level("INFO", logger="sam2prune"):
        write_overlay(tmp_path / "o.mp4", iter(frames), fps=5)
    assert "overlay o.mp4: frames of 48x33 written as 48x34 (H.264 needs even sizes: the last row repeated)" in (
        caplog.text
    )
    with av.open(str(tmp_path / "o.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 3 and decoded[0].shape == (34, 48, 3)


@pytest.mark.parametrize("workers", [1, 3])
def test_an_error_resizing_a_frame_names_it_and_out_of_memory_stays_what_it_is(monkeypatch, workers):
    """A frame PIL cannot resize raises an ``InputError`` naming its file, as a decode error does;
    running out of memory meanwhile stays a ``MemoryError`` (callers tell it by its type), with a
    note naming the frame. Either is that frame's alone, and a new request reads it again."""
    from sam2prune.data import frames as frames_module

    source = VideoSource.open(embedded_clip())
    resize = frames_module.resize_frame
    failure: list[BaseException] = []

    def failing(frame, image_size):
        if failure:
            raise failure.pop()
        return resize(frame, image_size)

    monkeypatch.setattr(frames_module, "resize_frame", failing)
    frames = FrameSource(source, 64, workers=workers, read_ahead=0, cache_frames=2)
    failure.append(ValueError("image has wrong mode"))
    with pytest.raises(InputError, match=rf"frame {source.frame_files[1]} cannot be resized.*wrong mode"):
        frames[1]
    failure.append(MemoryError("out of memory while resizing"))
    with pytest.raises(MemoryError, match="out of memory") as raised:
        frames[2]
    assert raised.value.__notes__ == [f"while preprocessing frame {source.frame_files[2]}"]
    assert torch.equal(frames[1], preprocess_frame(source.read_frame(1), 64))


@pytest.mark.parametrize("workers", [1, 3])
def test_a_reader_that_cannot_be_made_answers_every_frame_waited_for_and_the_next_request_reads(monkeypatch, workers):
    """Making the reader (or the resizing pool) can fail (out of memory, no file handles left):
    whoever waits for the frames of that batch gets the error instead of waiting for ever, and a
    later request reads them once the cause is gone."""
    import threading

    from sam2prune.data import frames as frames_module

    source = VideoSource.open(embedded_clip())
    frames = FrameSource(source, 64, workers=workers, read_ahead=2, cache_frames=4)
    real = frames_module.FrameReader
    failures = [MemoryError("no memory for a reader")]

    def failing(video):
        if failures:
            raise failures.pop()
        return real(video)

    monkeypatch.setattr(frames_module, "FrameReader", failing)
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(frames[10])
        except BaseException as error:  # the test reads what it was
            outcome.append(error)

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(20)
    assert not asking.is_alive(), "frames[10] waits for ever"
    assert isinstance(outcome[0], MemoryError) and "no memory for a reader" in str(outcome[0])
    assert torch.equal(frames[10], preprocess_frame(source.read_frame(10), 64))
    frames.close()


def test_frames_and_videos_shown_turned_by_their_viewers_are_read_as_stored_and_say_so(tmp_path, caplog, monkeypatch):
    """A phone's photo (EXIF orientation) or video (a rotation flag in its track) is shown turned;
    SAM 2 reads the stored pixels, and so does sam2prune, saying in which orientation prompts are."""
    import struct

    frames = tmp_path / "frames"
    frames.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    undefined = Image.Exif()
    undefined[0x0112] = 0  # written by some cameras: viewers ignore it
    for i in range(4):
        Image.new("RGB", (30, 20), (40 * i, 0, 0)).save(
            frames / f"{i:05d}.jpg", exif=[Image.Exif(), exif, exif, undefined][i]
        )
    monkeypatch.setattr(logging.getLogger("sam2prune"), "propagate", True)
    with caplog.at_level("WARNING", logger="sam2prune"):
        source = VideoSource.open(frames)
    assert (source.width, source.height) == (30, 20)
    assert "in 2 of 4 frames (00001.jpg, 00002.jpg); frames are read as stored, 30x20" in caplog.text

    video = _encode(tmp_path / "clip.mp4", "libx264").path
    caplog.clear()
    data = bytearray(video.read_bytes())
    header = data.find(b"tkhd")  # version 0: the matrix follows flags, 5 words, 2 reserved, layer..volume
    assert data[header + 4] == 0
    matrix = header + 4 + 4 + 20 + 8 + 8
    assert struct.unpack(">9i", data[matrix : matrix + 36])[0] == 65536  # the identity's first entry
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 0x40000000)
    (tmp_path / "turned.mp4").write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="sam2prune"):
        turned = VideoSource.open(tmp_path / "turned.mp4")
    assert (turned.width, turned.height) == (96, 64)
    assert "turned.mp4 carries a rotation flag (-90 degrees) that players apply; frames are read as stored, 96x64" in (
        caplog.text
    )


def test_frame_names_the_natural_order_finds_equal_are_ordered_whatever_the_file_systems_order(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("f01.png", "f1.png", "F2.png", "f2.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / name)
    listed = list(folder.iterdir())
    orders = []
    for order in (sorted(listed), sorted(listed, reverse=True)):
        monkeypatch.setattr(Path, "iterdir", lambda self, order=order: iter(order))
        orders.append(VideoSource.open(folder).frame_names)
    assert orders[0] == orders[1] == ["f01", "f1", "F2", "f2"]


def test_a_video_folder_that_cannot_be_read_is_named_as_the_video_folder(tmp_path, monkeypatch, capsys):
    """It said "error: bs6: Permission denied", not which input that was. (Root passes permission
    checks, so the refusal is simulated where the folder is listed.)"""
    from sam2prune.cli import main

    folder = tmp_path / "bs6"
    folder.mkdir()
    listing = Path.iterdir

    def refused(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", refused)
    expected = f"video folder {folder} cannot be read: Permission denied"
    with pytest.raises(InputError) as raised:
        VideoSource.open(folder)
    assert str(raised.value) == expected
    argv = ["segment", str(folder), "--point", "1,1", "--out", str(tmp_path / "o"), "--random-weights"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"sam2prune: error: {expected}"


def test_a_video_file_cut_short_is_read_as_far_as_it_decodes_and_says_so(tmp_path, caplog, monkeypatch):
    """An AVI or MKV cut in half decoded as a shorter video without a word, though its header
    still counts every frame; whole files of every container say nothing."""
    monkeypatch.setattr(logging.getLogger("sam2prune"), "propagate", True)
    whole = {}
    with caplog.at_level("WARNING", logger="sam2prune"):
        for name, container in (("clip.mpg", "mpeg"), ("clip.avi", None), ("clip.mp4", None), ("clip.mkv", None)):
            codec = "mpeg1video" if name.endswith(".mpg") else "libx264"
            whole[name] = _encode(tmp_path / name, codec, container=container, options={"bf": "2"})
    assert [len(source) for source in whole.values()] == [FRAMES] * 4 and "header says" not in caplog.text
    # an MP4 trimmed without re-encoding (`ffmpeg -ss 1.5 -c copy`): its edit list has players skip
    # frames its header counts; read as they are shown, and not taken for a file cut short
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(tmp_path / "clip.mp4")) as source_file, av.open(str(trimmed), "w") as output:
        stream = source_file.streams.video[0]
        copy = output.add_stream_from_template(stream)
        shift = None
        for packet in source_file.demux(stream):
            if packet.dts is None or packet.pts * stream.time_base < 1:
                continue
            shift = shift if shift is not None else round(1.5 / stream.time_base)
            packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
            output.mux(packet)
    with av.open(str(trimmed)) as check:
        counted_in_header = check.streams.video[0].frames
    with caplog.at_level("WARNING", logger="sam2prune"):
        assert len(VideoSource.open(trimmed)) < counted_in_header
    assert "header says" not in caplog.text
    cut = tmp_path / "cut.avi"
    data = (tmp_path / "clip.avi").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="sam2prune"):
        source = VideoSource.open(cut)
    assert 0 < len(source) < FRAMES
    assert f"video {cut}: its header says {FRAMES} frames, {len(source)} could be decoded (a file cut short?)" in (
        caplog.text
    )
