"""`sam2prune segment` end to end on real frames, and every bad input it must refuse cleanly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sam2prune.cli import embedded_clip, main
from sam2prune.data.palette import davis_palette, read_label_png
from sam2prune.errors import InputError

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TEST_DEVICE, TINY_SIZE, build_random

TINY = ["--image-size", str(TINY_SIZE)]


def run_cli(*args: str | Path) -> int:
    torch.manual_seed(0)
    weights = [] if "--checkpoint" in args else ["--random-weights"]
    return main(["segment", *map(str, args), *weights])


MARKER = ".sam2prune-segment"  # left in each output folder: --overwrite replaces only such a folder


def assert_palette_pngs(out: Path, names: list[str], size: tuple[int, int]) -> list[np.ndarray]:
    assert (out / MARKER).is_file()
    files = sorted(f for f in out.iterdir() if f.name != MARKER)
    assert [f.name for f in files] == [f"{name}.png" for name in names]
    labels = []
    for file in files:
        with Image.open(file) as image:
            assert image.mode == "P" and image.size == size
            palette = np.array(image.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
            assert np.array_equal(palette, davis_palette()[: len(palette)])
            labels.append(np.array(image))
    return labels


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_click_on_chair_writes_one_palette_png_per_frame(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, *TINY) == 0
    assert_palette_pngs(out, [f"{i:05d}" for i in range(6)], (720, 480))
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("segmented 6 frames, 1 object (id 1)") and "frames/s" in summary
    assert no_leftovers(tmp_path)


def test_mask_prompt_gives_its_object_id_on_the_prompted_frame(tmp_path):
    out = tmp_path / "out"
    assert (
        run_cli(CHAIR_FRAMES, "--mask", CHAIR_MASKS / "00002.png", "--frame", "2", "--obj-id", "7", "--out", out, *TINY)
        == 0
    )
    labels = assert_palette_pngs(out, [f"{i:05d}" for i in range(6)], (720, 480))
    # SAM 2 outputs the mask prompt itself on its frame, through its low-res mask (32x32 at
    # 128 px), so the shape is coarse but the place is the prompt's
    truth = read_label_png(CHAIR_MASKS / "00002.png") > 0
    predicted = labels[2] == 7
    assert set(np.unique(labels[2])) == {0, 7}
    assert (predicted & truth).sum() / (predicted | truth).sum() > 0.5
    assert (predicted & truth).sum() / predicted.sum() > 0.6
    assert all(set(np.unique(frame)) <= {0, 7} for frame in labels)


def test_prompts_file_with_several_objects_on_several_frames(tmp_path):
    mask = read_label_png(CHAIR_MASKS / "00003.png") > 0
    right_half = np.zeros_like(mask)
    right_half[:, 500:] = True
    Image.fromarray((right_half * 255).astype(np.uint8)).save(tmp_path / "other.png")
    prompts = {
        "objects": [
            {"obj_id": 3, "frame": 3, "mask": str(CHAIR_MASKS / "00003.png")},
            {"obj_id": 5, "frame": 1, "mask": "other.png"},
            {"obj_id": 9, "frame": 0, "points": [[100, 100], [120, 400]], "labels": [1, 0]},
        ]
    }
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    out = tmp_path / "out"
    assert run_cli(CHAIR_FRAMES, "--prompts", prompts_file, "--out", out, *TINY) == 0
    labels = assert_palette_pngs(out, [f"{i:05d}" for i in range(6)], (720, 480))
    assert 3 in labels[3] and 5 in labels[1]
    assert set(np.unique(np.stack(labels))) <= {0, 3, 5, 9}


def test_natural_sort_png_frames_and_names(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.open(CHAIR_FRAMES / f"{i:05d}.jpg").save(frames / f"img{[2, 10, 1][i]}.png")
    out = tmp_path / "out"
    assert run_cli(frames, "--box", "200,100,500,450", "--out", out, *TINY) == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "img1.png", "img10.png", "img2.png"]
    from sam2prune.data.video import VideoSource

    assert VideoSource.open(frames).frame_names == ["img1", "img2", "img10"]


def _write_mp4(path: Path, frames: list[np.ndarray]) -> None:
    from sam2prune.viz import write_overlay

    write_overlay(path, frames, fps=5)


def test_video_file_input_and_overlays(tmp_path, capsys):
    frames = [np.asarray(Image.open(CHAIR_FRAMES / f"{i:05d}.jpg").convert("RGB")) for i in range(4)]
    video = tmp_path / "clip.mp4"
    _write_mp4(video, frames)
    out = tmp_path / "out"
    assert run_cli(video, "--point", "300,250", "--out", out, "--overlay", tmp_path / "o.mp4", *TINY) == 0
    # the overlay shows its progress, and the summary says how long it took apart from tracking
    captured = capsys.readouterr()
    assert "overlay o.mp4: 4/4 frames" in captured.err
    assert "; overlay written in " in captured.out and f" s -> {tmp_path / 'o.mp4'}" in captured.out
    assert_palette_pngs(out, [f"{i:05d}" for i in range(4)], (720, 480))
    import av

    with av.open(str(tmp_path / "o.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 4 and decoded[0].shape == (480, 720, 3)

    out_gif = tmp_path / "out_gif"
    assert (
        run_cli(
            CHAIR_FRAMES, "--mask", CHAIR_MASKS / "00000.png", "--out", out_gif, "--overlay", tmp_path / "o.gif", *TINY
        )
        == 0
    )
    with Image.open(tmp_path / "o.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (720, 480)
        first = np.asarray(gif.convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(CHAIR_FRAMES / "00000.jpg").convert("RGB"), dtype=np.int16)
    inside = read_label_png(out_gif / "00000.png") == 1
    # the object is tinted, the background is not
    assert np.abs(first[inside] - original[inside]).mean() > 3 * np.abs(first[~inside] - original[~inside]).mean()


def test_a_gif_overlay_holds_one_rgb_frame_at_a_time(tmp_path, monkeypatch):
    """A long video's GIF overlay: every frame kept as RGB until the file was written (1.2 MB a
    frame at 854x480)."""
    import weakref

    from sam2prune import viz

    alive = most_alive = 0
    made_by_pil = Image.fromarray

    def gone():
        nonlocal alive
        alive -= 1

    def counted(array):
        nonlocal alive, most_alive
        image = made_by_pil(array)
        weakref.finalize(image, gone)
        alive += 1
        most_alive = max(most_alive, alive)
        return image

    monkeypatch.setattr(viz.Image, "fromarray", counted)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(30)]
    viz.write_overlay(tmp_path / "o.gif", iter(frames), fps=5)
    assert most_alive <= 3
    with Image.open(tmp_path / "o.gif") as gif:
        assert gif.n_frames == 30 and gif.size == (32, 24) and gif.info["duration"] == 200


@pytest.mark.parametrize(("fps", "shown_ms"), [(15, 70), (30, 30), (29.97, 30), (50, 20), (60, 20), (120, 20)])
def test_a_gif_overlay_shows_each_frame_for_the_nearest_delay_a_gif_can_hold(
    tmp_path, caplog, monkeypatch, fps, shown_ms
):
    # GIF delays are whole hundredths of a second: PIL truncated 1000/15 = 67 ms to 60 (16.7 fps),
    # and above 100 fps wrote 0, which browsers play at 10 fps
    import logging

    from sam2prune import viz

    monkeypatch.setattr(logging.getLogger("sam2prune"), "propagate", True)
    frames = [np.full((8, 8, 3), 60 * i, np.uint8) for i in range(3)]
    with caplog.at_level("WARNING", logger="sam2prune"):
        viz.write_overlay(tmp_path / "o.gif", iter(frames), fps=fps)
    with Image.open(tmp_path / "o.gif") as gif:
        gif.seek(1)
        assert gif.info["duration"] == shown_ms
    assert ("a GIF plays at most 50 fps" in caplog.text) == (fps > 50)


def test_embedded_default_clip_runs_without_arguments(tmp_path):
    out = tmp_path / "out"
    assert run_cli("--out", out, *TINY) == 0
    names = sorted(p.stem for p in embedded_clip().glob("*.jpg"))
    assert len(names) == 24
    assert_palette_pngs(out, names, (480, 270))


def test_checkpoint_round_trip_through_the_cli_gives_identical_masks(tmp_path):
    from sam2prune import PruningConfig
    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import prompts_from_arguments
    from sam2prune.segment import segment_video

    model = build_random(seed=11)
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    pruned = build_random(seed=99, pruning=PruningConfig())
    pruned.load_state_dict(model.state_dict())
    prompts = prompts_from_arguments(points=["300,250"], negatives=[], box=None, mask=None, frame=0, obj_id=None)
    for method, predictor in (("sam2", model), ("pruned", pruned)):
        segment_video(predictor, VideoSource.open(CHAIR_FRAMES), prompts, tmp_path / f"api_{method}")
        out = tmp_path / f"cli_{method}"
        assert (
            run_cli(
                CHAIR_FRAMES, "--point", "300,250", "--checkpoint", checkpoint, "--method", method, "--out", out, *TINY
            )
            == 0
        )
        for name in (f"{i:05d}.png" for i in range(6)):
            assert np.array_equal(read_label_png(tmp_path / f"api_{method}" / name), read_label_png(out / name)), (
                method,
                name,
            )
    # the weights matter: another random model gives other logits
    other = build_random(seed=12)
    a = model.init_state(CHAIR_FRAMES)
    b = other.init_state(CHAIR_FRAMES)
    _, _, logits_a = model.add_new_points_or_box(a, 0, 1, points=[[300, 250]], labels=[1])
    _, _, logits_b = other.add_new_points_or_box(b, 0, 1, points=[[300, 250]], labels=[1])
    assert not torch.equal(logits_a, logits_b)


def test_failure_during_tracking_leaves_no_output(tmp_path, monkeypatch, tiny_predictor):
    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import prompts_from_arguments
    from sam2prune.segment import segment_video

    original = type(tiny_predictor).propagate_in_video

    def failing(self, *args, **kwargs):
        for count, item in enumerate(original(self, *args, **kwargs)):
            if count == 3:
                raise RuntimeError("simulated failure")
            yield item

    monkeypatch.setattr(type(tiny_predictor), "propagate_in_video", failing)
    prompts = prompts_from_arguments(points=["300,250"], negatives=[], box=None, mask=None, frame=0, obj_id=None)
    with pytest.raises(RuntimeError, match="simulated"):
        segment_video(tiny_predictor, VideoSource.open(CHAIR_FRAMES), prompts, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_masks_are_written_while_tracking_goes_on_and_a_failed_write_leaves_no_output(tmp_path, monkeypatch, capsys):
    """segment writes each frame's PNG on a thread of its own (tracking does not wait for it);
    a write that fails fails the job with its error, and nothing is left behind."""
    import threading

    from sam2prune import segment

    original = segment.write_label_png
    threads = []

    def recorded(path, labels):
        threads.append(threading.current_thread().name)
        return original(path, labels)

    monkeypatch.setattr(segment, "write_label_png", recorded)
    out = tmp_path / "out"
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, *TINY) == 0
    assert len(list(out.glob("*.png"))) == len(threads) == 6 and set(threads) == {"sam2prune-labels"}

    def failing(path, labels):
        if len(threads) == 8:  # the third frame of the second run
            raise OSError(28, "No space left on device")
        threads.append(threading.current_thread().name)
        return original(path, labels)

    monkeypatch.setattr(segment, "write_label_png", failing)
    capsys.readouterr()
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", tmp_path / "failed", *TINY) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("sam2prune: error: cannot write the mask ") and "00002.png" in error
    assert error.endswith(": No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_static_step_gives_the_same_masks(tmp_path, monkeypatch):
    """``--static-step buffers`` (the GPU fast path's step, run eagerly): the same PNGs, with the
    embedded clip's steady frames (16-23, both objects together) run as the static step."""
    from sam2prune.predictor.static_step import StaticTrackingStep

    steps = []
    run = StaticTrackingStep.run

    def counted(step, *args, **kwargs):
        steps.append(kwargs["frame_idx"])
        return run(step, *args, **kwargs)

    monkeypatch.setattr(StaticTrackingStep, "run", counted)
    labels = {}
    for mode in ("off", "buffers"):
        out = tmp_path / mode
        assert run_cli("--out", out, *TINY, "--scorer", "prior", "--static-step", mode) == 0
        labels[mode] = [read_label_png(path) for path in sorted(out.glob("*.png"))]
    assert steps == list(range(16, 24))
    assert len(labels["off"]) == 24 and all(
        np.array_equal(a, b) for a, b in zip(labels["off"], labels["buffers"], strict=True)
    )


def test_label_writer_writes_labels_from_the_test_device(tmp_path):
    """On a GPU (``SAM2PRUNE_TEST_DEVICE=cuda``) through pinned memory, without waiting: the
    writing thread waits for the copy (the GPU is kept busy first, so a frame read too early
    would be wrong)."""
    from sam2prune.segment import LabelWriter

    generator = torch.Generator().manual_seed(0)
    labels = [torch.randint(1, 4, (480, 640), dtype=torch.uint8, generator=generator) for _ in range(12)]
    on_device = [frame.to(TEST_DEVICE) for frame in labels]
    with LabelWriter(pending=2) as writer:
        for index, frame in enumerate(on_device):
            if TEST_DEVICE != "cpu":
                torch.cuda._sleep(50_000_000)  # tens of ms of GPU time before the labels are made
            writer.write(tmp_path / f"{index}.png", frame * 1)
    for index, frame in enumerate(labels):
        assert np.array_equal(read_label_png(tmp_path / f"{index}.png"), frame.numpy()), index


def test_overwrite_replaces_a_folder_of_masks_and_never_one_holding_other_files(tmp_path, capsys):
    """An earlier output (label PNGs; a file manager's .DS_Store) is replaced as a whole with
    --overwrite (a mask of a frame that is gone goes too); a folder holding anything else (the
    user's notes, a subfolder, a screenshot: an RGB PNG) is refused, --overwrite or not, and
    left as it was."""
    from sam2prune.data.palette import write_label_png

    out = tmp_path / "out"
    out.mkdir()
    write_label_png(out / "99999.PNG", np.ones((4, 4), np.uint8))
    (out / ".DS_Store").write_bytes(b"\x00")
    # label PNGs segment did not write (ground truth, another tool's masks): refused, --overwrite or not
    for overwrite in ((), ("--overwrite",)):
        assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, *overwrite, *TINY) == 2
        assert f"--out {out} holds label PNGs that sam2prune segment did not write" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".DS_Store", "99999.PNG"]
    # an earlier output (it holds the marker, which lists the files segment wrote)
    (out / MARKER).write_text(json.dumps({"files": ["99999.PNG"]}))
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, *TINY) == 2
    assert f"--out {out} is not empty; pass --overwrite" in capsys.readouterr().err
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, "--overwrite", *TINY) == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER] + [f"{i:05d}.png" for i in range(6)]
    assert json.loads((out / MARKER).read_text())["files"] == [f"{i:05d}.png" for i in range(6)]
    # a label PNG of the user's put among them is not replaced with them
    write_label_png(out / "gt_00059.png", np.ones((4, 4), np.uint8))
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, "--overwrite", *TINY) == 2
    assert f"--out {out} holds gt_00059.png, which sam2prune segment did not write there" in capsys.readouterr().err
    (out / "gt_00059.png").unlink()
    # a link to it: replacing it would replace the link, not the masks it points to
    (tmp_path / "link").symlink_to(out)
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", tmp_path / "link", "--overwrite", *TINY) == 2
    assert f"--out {tmp_path / 'link'} is a link to {out}: name the folder itself" in capsys.readouterr().err
    (tmp_path / "link").unlink()
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(out / "screenshot.png")
    for overwrite in ((), ("--overwrite",)):
        assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, *overwrite, *TINY) == 2
        error = capsys.readouterr().err
        assert f"--out {out} holds notes.txt, screenshot.png, sub/, which this command did not write" in error, error
        assert (out / "notes.txt").read_text() == "mine" and (out / "sub").is_dir()
    assert no_leftovers(tmp_path)


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """An earlier output made read-only (or immutable) cannot be moved aside: said at once, not
    as a traceback after tracking the whole video. (Root passes permission checks, so the
    folder's refusal is simulated where the check tries it.)"""
    import tempfile

    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("")
    make_temporary = tempfile.mkdtemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == out:
            raise PermissionError(13, "Permission denied", str(dir))
        return make_temporary(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    monkeypatch.setattr("sam2prune.models.build_predictor", lambda *a, **k: pytest.fail("a model was built"))
    assert run_cli(CHAIR_FRAMES, "--point", "300,250", "--out", out, "--overwrite", *TINY) == 2
    assert f"--out {out}: cannot write into {out}: Permission denied" in capsys.readouterr().err
    assert no_leftovers(tmp_path) and sorted(p.name for p in out.iterdir()) == [MARKER]


def _corrupt(folder: Path) -> Path:
    (folder / "00003.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return folder / "00003.jpg"


def _truncate(folder: Path) -> Path:
    data = (folder / "00004.jpg").read_bytes()
    (folder / "00004.jpg").write_bytes(data[: len(data) // 2])
    return folder / "00004.jpg"


def _resize_one(folder: Path) -> Path:
    Image.open(folder / "00002.jpg").resize((640, 480)).save(folder / "00002.jpg")
    return folder / "00002.jpg"


@pytest.mark.parametrize(
    "make_bad, expected",
    [
        (_corrupt, "00003.jpg cannot be read as an image"),
        (_truncate, "00004.jpg is corrupt or unreadable"),
        (_resize_one, "00002.jpg is 640x480 but 00000.jpg is 720x480"),
    ],
)
def test_bad_frames_are_named(tmp_path, chair_copy, capsys, make_bad, expected):
    make_bad(chair_copy)
    out = tmp_path / "out"
    assert run_cli(chair_copy, "--point", "300,250", "--out", out, *TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert expected in err[-1] and err[-1].startswith("sam2prune: error:")
    assert not out.exists() and no_leftovers(tmp_path)


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["{missing}", "--point", "1,1"], "does not exist"),
        (["{empty}", "--point", "1,1"], "holds no JPEG or PNG frames"),
        (["{nested}", "--point", "1,1"], "holds no JPEG or PNG frames; it holds folders (a, b): a video is one folder"),
        (["{tmp}/taken.mp4", "--point", "1,1"], "taken.mp4 cannot be decoded (after 0 frames)"),
        (["{tmp}/empty.mp4", "--point", "1,1"], "empty.mp4 is an empty file (0 bytes)"),
        (["{chair}", "--point", "720,10"], "point (720, 10) is outside the 720x480 image (0 <= x < 720, 0 <= y < 480)"),
        (["{chair}", "--point=-1,10"], "point (-1, 10) is outside the 720x480 image"),
        (["{chair}", "--point", "-1,10"], "point (-1, 10) is outside the 720x480 image"),  # not an option
        (["{chair}", "--point", "1,1", "--neg", "-.5,3"], "--neg: object 1: negative click (-0.5, 3) is outside"),
        (["{chair}", "--box", "10,10,800,100"], "--box: object 1: box (10, 10, 800, 100) must satisfy"),
        (["{chair}", "--box", "100,10,50,100"], "must satisfy 0 <= x0 < x1"),
        (["{chair}", "--point", "10,10", "--frame", "6"], "frame 6 is out of range; the video has 6 frames"),
        (["{chair}", "--mask", "{small_mask}"], "mask is 360x240 but the frames are 720x480"),
        (["{chair}", "--mask", "{absent_mask}"], "does not exist"),
        (["{chair}", "--point", "10"], "--point '10': expected X,Y"),
        (["{chair}", "--neg", "10,10"], "--neg needs at least one --point"),
        (["{chair}"], "no prompt given"),
        (["--frame", "3"], "--frame says which frame and object --point, --box or --mask belong to"),
        (["--obj-id", "5", "--frame", "1"], "--frame and --obj-id say which frame and object"),
        (["{chair}", "--point", "10,10", "--model", "sam9_huge"], "unknown model 'sam9_huge'"),
        (["{chair}", "--point", "10,10", "--checkpoint", "{wrong_ckpt}"], "does not fit model sam2.1_hiera_t"),
        (["{chair}", "--point", "10,10", "--overlay", "{tmp}/o.avi"], "expected a .mp4 or .gif"),
        (["{chair}", "--prompts", "{bad_json}"], "is not valid JSON"),
        (["{chair}", "--prompts", "{absent_mask_json}"], "objects[0]: mask"),
        (["{chair}", "--point", "10,10", "--image-size", "100"], "multiple of 32"),
        (["{chair}", "--point", "10,10", "--device", "cpu", "--bf16"], "--bf16 (bfloat16 autocast) is for CUDA"),
        (
            ["{chair}", "--point", "10,10", "--device", "cpu", "--static-step", "graphs"],
            "--static-step: static_step='graphs' captures CUDA graphs: the predictor runs on cpu",
        ),
        (["{chair}", "--point", "10,10", "--method", "sam2", "--static-step", "buffers"], "with --method sam2"),
        (["{chair}", "--point", "10,10", "--device", "tpu"], "--device 'tpu' is not a device name"),
        (["{chair}", "--point", "10,10", "--overlay", "{chair}/o.mp4"], "lies inside the input VIDEO"),
        (["{chair}", "--point", "10,10", "--overlay", "{tmp}/taken.mp4"], "taken.mp4 exists; pass --overwrite"),
        (["{chair}", "--point", "10,10", "--overlay", "{tmp}/out"], "is --out"),
        (["{chair}", "--box", "1,1,20,20", "--box", "2,2,30,30"], "--box was given 2 times"),
        (["{chair}", "--prompts", "{bad_json}", "--frame", "3"], "cannot be combined with --frame"),
        (["{chair}", "--prompts", "{bad_json}", "--obj-id", "2"], "cannot be combined with --obj-id"),
        (["{chair}", "--mask", "{label_3}", "--obj-id", "5"], "label map with no pixel of object 5 (its ids: [3])"),
        (["{chair}", "--prompts", "{negative_json}"], "object 2 starts on frame 1 with negative clicks alone"),
    ],
)
def test_bad_inputs_fail_with_one_clear_line_and_no_output(tmp_path, capsys, arguments, expected):
    (tmp_path / "empty").mkdir()
    for name in ("b", "a"):
        (tmp_path / "nested" / name).mkdir(parents=True)
    (tmp_path / "taken.mp4").write_bytes(b"the user's video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    Image.fromarray(np.ones((240, 360), dtype=np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "absent.json").write_text(json.dumps({"objects": [{"obj_id": 1, "frame": 0, "mask": "absent.png"}]}))
    _label_map({3: (slice(100, 200), slice(100, 300))}).save(tmp_path / "label_3.png")
    negative = [{"obj_id": 1, "points": [[10, 10]]}, {"obj_id": 2, "frame": 1, "points": [[10, 10]], "labels": [0]}]
    (tmp_path / "negative.json").write_text(json.dumps({"objects": negative}))
    places = {
        "missing": tmp_path / "nowhere",
        "empty": tmp_path / "empty",
        "nested": tmp_path / "nested",
        "chair": CHAIR_FRAMES,
        "small_mask": tmp_path / "small.png",
        "absent_mask": tmp_path / "absent.png",
        "bad_json": tmp_path / "bad.json",
        "absent_mask_json": tmp_path / "absent.json",
        "label_3": tmp_path / "label_3.png",
        "negative_json": tmp_path / "negative.json",
        "tmp": tmp_path,
    }
    if "{wrong_ckpt}" in arguments:
        torch.save({"model": build_random(model="sam2_hiera_t").state_dict()}, tmp_path / "wrong.pt")
        places["wrong_ckpt"] = tmp_path / "wrong.pt"
    filled = [a.format(**places) for a in arguments]
    out = tmp_path / "out"
    extra = [] if "--image-size" in filled else TINY
    assert run_cli(*filled, "--out", out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and expected in err[-1], err
    assert err[-1].startswith("sam2prune: error:")
    assert not out.exists() and (tmp_path / "taken.mp4").read_bytes() == b"the user's video"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _label_map(regions: dict[int, tuple[slice, slice]], size: tuple[int, int] = (480, 720)) -> Image.Image:
    """A DAVIS-style palette PNG of the chair clip's size, object ``k`` on ``regions[k]``."""
    labels = np.zeros(size, np.uint8)
    for value, region in regions.items():
        labels[region] = value
    image = Image.fromarray(labels, mode="P")
    image.putpalette(davis_palette().ravel().tolist())
    return image


def test_a_label_png_gives_its_own_ids_and_a_plain_mask_takes_the_object_id(tmp_path):
    """A DAVIS annotation holding object 3 alone is object 3 (it was object 1, or whatever
    --obj-id said), as each id of one holding several is; a plain mask (0/255 or 0/1) names no
    object, so it is --obj-id's (default 1); in a prompts file as on the command line. Negative
    clicks alone may correct an object on a later frame, not start it."""
    from sam2prune.prompts import check_prompts, load_prompts_file, masks_from_png

    _label_map({3: (slice(100, 200), slice(100, 300))}).save(tmp_path / "three.png")
    _label_map({2: (slice(0, 50), slice(0, 50)), 4: (slice(100, 200), slice(100, 300))}).save(tmp_path / "two.png")
    plain = np.zeros((480, 720), np.uint8)
    plain[10:20, 10:20] = 255
    Image.fromarray(plain).save(tmp_path / "plain.png")
    Image.fromarray(plain // 255).save(tmp_path / "plain01.png")

    def ids(name: str, obj_id: int | None) -> list[int]:
        return [p.obj_id for p in masks_from_png(tmp_path / name, obj_id=obj_id, frame=0, source="--mask")]

    assert ids("three.png", None) == [3] and ids("three.png", 3) == [3]
    assert ids("two.png", None) == [2, 4] and ids("two.png", 4) == [4]
    assert ids("plain.png", None) == [1] and ids("plain.png", 5) == [5] and ids("plain01.png", 7) == [7]
    (tmp_path / "p.json").write_text(
        json.dumps(
            [
                {"frame": 2, "mask": "three.png"},
                {"obj_id": 6, "frame": 2, "mask": "plain.png"},
                {"obj_id": 3, "frame": 4, "points": [[5, 5]], "labels": [0]},
            ]
        )
    )
    prompts = load_prompts_file(tmp_path / "p.json")
    assert [(p.obj_id, p.frame) for p in prompts] == [(3, 2), (6, 2), (3, 4)]
    check_prompts(prompts, num_frames=6, width=720, height=480)
    zero = masks_from_png(tmp_path / "plain.png", obj_id=0, frame=0, source="objects[0]")  # not taken for "none"
    with pytest.raises(InputError, match=r"objects\[0\]: object id 0 must be in 1..254"):
        check_prompts(zero, num_frames=6, width=720, height=480)


def test_a_soft_greyscale_mask_is_refused_naming_its_values_and_greyscale_ids_are_objects(tmp_path):
    """An anti-aliased greyscale mask (0, 64, 128, 255) was read as a label map: 255 dropped as
    void, 64 and 128 each an object, silently. 255 is void only in an indexed-palette (DAVIS)
    label PNG; in a greyscale PNG it is a mask's foreground. Object ids written as grey values
    (no 255: as cv2.imwrite writes a label map) stay objects, as eval reads them."""
    from sam2prune.prompts import masks_from_png

    soft = np.zeros((64, 64), np.uint8)
    soft[16:48, 16:48] = 255
    soft[15, 16:48] = 128
    soft[48, 16:48] = 64
    Image.fromarray(soft, mode="L").save(tmp_path / "soft.png")
    with pytest.raises(InputError) as refused:
        masks_from_png(tmp_path / "soft.png", obj_id=None, frame=0, source="--mask")
    assert str(refused.value).startswith(
        f"--mask: mask {tmp_path / 'soft.png'} is a greyscale PNG with the values 0, 64, 128, 255: a soft or "
        "anti-aliased mask, 255 with other values"
    )
    assert "threshold it" in str(refused.value)
    ids = np.where(soft == 255, 2, np.where(soft > 0, 1, 0)).astype(np.uint8)
    Image.fromarray(ids, mode="L").save(tmp_path / "ids.png")
    objects = masks_from_png(tmp_path / "ids.png", obj_id=None, frame=0, source="--mask")
    assert [(p.obj_id, int(p.mask.sum())) for p in objects] == [(1, 64), (2, 32 * 32)]
    Image.fromarray(ids * 127, mode="L").save(tmp_path / "plain254.png")  # 0, 127, 254: ids, no 255
    assert [p.obj_id for p in masks_from_png(tmp_path / "plain254.png", obj_id=None, frame=0, source="--mask")] == [
        127,
        254,
    ]
    _label_map({2: (slice(0, 50), slice(0, 50)), 255: (slice(100, 110), slice(100, 110))}).save(tmp_path / "void.png")
    assert [p.obj_id for p in masks_from_png(tmp_path / "void.png", obj_id=None, frame=0, source="--mask")] == [2]
    # the same soft mask saved with a palette of greys (as some tools save masks) is no label map
    indexed = Image.fromarray(soft, mode="P")
    indexed.putpalette([v for i in range(256) for v in (i, i, i)])
    indexed.save(tmp_path / "soft_indexed.png")
    with pytest.raises(
        InputError, match=r"soft_indexed\.png is an indexed PNG of grey colours with the values 0, 64, 128, 255: a soft"
    ):
        masks_from_png(tmp_path / "soft_indexed.png", obj_id=None, frame=0, source="--mask")
    plain = Image.fromarray(np.where(soft == 255, 255, 0).astype(np.uint8), mode="P")
    plain.putpalette([v for i in range(256) for v in (i, i, i)])
    plain.save(tmp_path / "plain_indexed.png")
    (prompt,) = masks_from_png(tmp_path / "plain_indexed.png", obj_id=None, frame=0, source="--mask")
    assert prompt.obj_id == 1 and prompt.mask.sum() == 32 * 32


def test_out_is_refused_where_it_holds_a_mask_the_prompts_file_names(tmp_path, capsys):
    """Replacing --out would delete a mask that the --prompts file reads, --overwrite or not."""
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(CHAIR_MASKS / "00000.png", masks / "m.png")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"objects": [{"obj_id": 1, "frame": 0, "mask": "masks/m.png"}]}))
    assert run_cli(CHAIR_FRAMES, "--prompts", prompts, "--out", masks, "--overwrite", *TINY) == 2
    assert "contains the input mask of --prompts" in capsys.readouterr().err
    assert (masks / "m.png").read_bytes() == (CHAIR_MASKS / "00000.png").read_bytes()


def test_console_script_help_explains_the_options():
    script = Path(sys.executable).parent / "sam2prune"
    result = subprocess.run([str(script), "segment", "--help"], capture_output=True, text=True, check=True)
    for option in (
        "--point",
        "--neg",
        "--box",
        "--mask",
        "--frame",
        "--obj-id",
        "--prompts",
        "--model",
        "--checkpoint",
        "--random-weights",
        "--image-size",
        "--device",
        "--overlay",
        "--overwrite",
    ):
        assert option in result.stdout, option
    bad = subprocess.run(
        [str(script), "segment", str(CHAIR_FRAMES), "--out", "x", "--frame", "-2"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "frame index" in bad.stderr


def test_a_prompts_file_with_keys_it_does_not_know_is_refused_at_the_top_as_in_an_object(tmp_path):
    # a misspelt key was refused in an object but ignored beside "objects"
    from sam2prune.prompts import load_prompts_file

    (tmp_path / "p.json").write_text(json.dumps({"objects": [{"points": [[1, 1]]}], "fps": 5}))
    with pytest.raises(InputError, match=r"p\.json: unknown keys \['fps'\] \(expected \{\"objects\": \[\.\.\.\]\}\)"):
        load_prompts_file(tmp_path / "p.json")
    (tmp_path / "p.json").write_text(json.dumps({"objects": [{"pints": [[1, 1]]}]}))
    with pytest.raises(InputError, match=r"objects\[0\]: unknown keys \['pints'\]"):
        load_prompts_file(tmp_path / "p.json")


def test_bf16_on_a_cpu_predictor_is_refused_not_run_in_float32(tmp_path, tiny_predictor):
    """segment_video(bf16=True) on the CPU ran under CUDA autocast, i.e. silently in float32."""
    from sam2prune.data.video import VideoSource
    from sam2prune.precision import bf16_autocast
    from sam2prune.prompts import prompts_from_arguments
    from sam2prune.segment import segment_video

    expected = "bf16 autocast is for CUDA devices; cpu is not one"
    with pytest.raises(ValueError, match=expected):
        bf16_autocast(True, torch.device("cpu"))
    with pytest.raises(ValueError, match=expected):
        bf16_autocast(True, "cpu")
    with bf16_autocast(False, "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    prompts = prompts_from_arguments(points=["300,250"], negatives=[], box=None, mask=None, frame=0, obj_id=None)
    with pytest.raises(ValueError, match=expected):
        segment_video(tiny_predictor, VideoSource.open(CHAIR_FRAMES), prompts, tmp_path / "out", bf16=True)
    assert list(tmp_path.iterdir()) == []
