"""The interactive protocol, `eval` end to end on a real clip (files, columns, counts), resume,
`report` and `sweep`."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2prune import PruningConfig
from sam2prune.cli import main
from sam2prune.config import ProtocolConfig
from sam2prune.data.datasets import Sequence
from sam2prune.data.palette import read_label_png
from sam2prune.data.video import VideoSource
from sam2prune.errors import InputError
from sam2prune.evaluation import protocol as evaluate
from sam2prune.evaluation.protocol import corrective_clicks, interior_point
from sam2prune.segment import labels_from_logits

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TINY_SIZE, build_random, last_error, snapshot


def test_interior_point_is_inside_rings_and_c_shapes_where_the_centroid_is_not():
    yy, xx = np.mgrid[:61, :61]
    radius = np.hypot(yy - 30, xx - 30)
    ring = (radius > 18) & (radius < 28)
    c_shape = ring & ~((xx > 30) & (np.abs(yy - 30) < 10))
    for mask in (ring, c_shape):
        cy, cx = np.argwhere(mask).mean(axis=0).round().astype(int)
        assert not mask[cy, cx]  # the centroid misses
        x, y = interior_point(mask)
        assert mask[y, x]
        # and it is as deep inside as the mask allows: the ring is 9 px thick, 4-5 px from each edge
        assert 22 < np.hypot(y - 30, x - 30) < 24
    border = np.zeros((10, 10), bool)
    border[:, :4] = True  # the image border counts as outside
    assert interior_point(border)[0] in (1, 2)


def test_corrective_clicks_fix_the_largest_errors_first():
    gt = np.zeros((40, 40), bool)
    gt[5:25, 5:25] = True
    pred = gt.copy()
    pred[5:25, 15:25] = False  # false negative: 200 px
    pred[30:36, 30:36] = True  # false positive: 36 px
    pred[0:2, 30:32] = True  # false positive: 4 px
    clicks = corrective_clicks(gt, pred, max_clicks=3)
    assert [label for _, _, label in clicks] == [1, 0, 0]
    (x0, y0, _), (x1, y1, _), (x2, y2, _) = clicks
    assert gt[y0, x0] and not pred[y0, x0]
    assert 30 <= x1 < 36 and 30 <= y1 < 36
    assert y2 < 2 and 30 <= x2 < 32
    assert len(corrective_clicks(gt, pred, max_clicks=1)) == 1
    assert corrective_clicks(gt, gt) == []
    # regions of one size: the first in raster order first
    pred[0:2, 30:32] = False
    pred[38:40, 0:2] = pred[20:22, 36:38] = True
    assert [(x, y) for x, y, _ in corrective_clicks(gt, pred, max_clicks=4)][2:] == [(36, 20), (0, 38)]


def _chair_sequence() -> Sequence:
    source = VideoSource.open(CHAIR_FRAMES)
    truth = {i: (lambda i=i: read_label_png(CHAIR_MASKS / f"{i:05d}.png")) for i in range(len(source))}
    return Sequence(name="chair", source=source, annotated=truth, obj_ids=[1], first_frames={1: 0})


def test_the_fps_is_the_predictors_not_the_scorings(monkeypatch):
    """Scoring a 480p frame takes about as long as a tracking step on a GPU: it is not timed."""
    scored = []

    def slow_scores(*args):
        time.sleep(0.4)
        scored.append(args)
        return evaluate_frame_scores(*args)

    evaluate_frame_scores = evaluate.frame_scores
    monkeypatch.setattr(evaluate, "frame_scores", slow_scores)
    tracker = evaluate.SequenceTracker(build_random(), _chair_sequence(), ProtocolConfig(max_rounds=0))
    _, stats = tracker.run()
    assert len(scored) == 5  # frames 1..5
    assert stats["seconds_tracking"] < stats["seconds_total"] - 5 * 0.4
    assert stats["fps"] == 6 / stats["seconds_tracking"]


def test_an_object_first_seen_on_the_last_annotated_frame_is_left_out_of_the_means(tmp_path, caplog):
    """It has no later annotated frame to score: its mean would be NaN, and so every mean."""
    chair = _chair_sequence()
    late = read_label_png(CHAIR_MASKS / "00005.png")
    late[300:400, 450:600] = 2
    annotated = {0: chair.annotated[0], 5: lambda: late}
    sequence = Sequence(
        name="late", source=chair.source, annotated=annotated, obj_ids=[1, 2], first_frames={1: 0, 2: 5}
    )
    settings = evaluate.EvalSettings(
        dataset="pumavos",
        root=str(CHAIR_FRAMES.parent),
        split=None,
        method="sam2",
        model="sam2.1_hiera_t",
        checkpoint=None,
        image_size=TINY_SIZE,
        device="cpu",
        pruning=None,
    )
    out = tmp_path / "run"
    evaluate.prepare_run_dir(out, settings, overwrite=False)
    protocol = ProtocolConfig(max_rounds=0)
    record = evaluate.evaluate_sequence(build_random(), sequence, out, protocol=protocol, device=torch.device("cpu"))
    assert record.obj_ids == [1] and record.unscored_obj_ids == [2] and len(record.j["1"]) == 1
    assert "late: object 2 first seen on its last annotated frame (5)" in caplog.text
    report = evaluate.summarize([record], settings, out)
    assert np.isfinite(report["overall"]["J&F-Mean"]) and report["overall"]["unscored_objects"] == 1
    # a sequence with nothing to score: no J, F in its row, and none at all is refused
    alone = Sequence(name="alone", source=chair.source, annotated=annotated, obj_ids=[2], first_frames={2: 5})
    empty = evaluate.evaluate_sequence(build_random(), alone, out, protocol=protocol, device=torch.device("cpu"))
    report = evaluate.summarize([record, empty], settings, out)
    assert (
        report["per_sequence"][1]["J&F"] is None and report["overall"]["J&F-Mean"] == report["per_sequence"][0]["J&F"]
    )
    with pytest.raises(InputError, match="no object of the 1 sequence has an annotated frame after"):
        evaluate.summarize([empty], settings, out)
    # found before a model is built
    evaluate.check_sequences([sequence, alone])
    # bf16 on the CPU ran under CUDA autocast, i.e. in float32, silently
    with pytest.raises(ValueError, match="bf16 autocast is for CUDA devices; cpu is not one"):
        evaluate.evaluate_sequence(
            build_random(), sequence, out, protocol=protocol, device=torch.device("cpu"), bf16=True
        )
    with pytest.raises(InputError, match="no object of the 1 sequence has an annotated frame after"):
        evaluate.check_sequences([alone])


@pytest.mark.parametrize("pruning", [None, PruningConfig()], ids=["sam2", "pruned"])
def test_a_correction_is_what_tracking_goes_on_from(pruning):
    """The corrected frame keeps the clicks' output, and the frames after it are tracked from
    it. (sam2 1.1.0's inference default keeps a correction as an ordinary memory, and the pass
    from the corrected frame tracks it again without the clicks: nothing changed.)"""
    predictor = build_random(pruning=pruning)
    sequence = _chair_sequence()
    passes, corrections = [], []
    propagate, click = predictor.propagate_in_video, predictor.add_new_points_or_box

    def recorded_pass(state, **kwargs):
        passes.append({})
        for frame, obj_ids, logits in propagate(state, **kwargs):
            passes[-1][frame] = logits.clone()
            yield frame, obj_ids, logits

    def recorded_click(state, frame, *args, **kwargs):
        out = click(state, frame, *args, **kwargs)
        if passes:  # after the first pass: a correction
            corrections.append((frame, out[2].clone()))
        return out

    tracker = evaluate.SequenceTracker(predictor, sequence, ProtocolConfig(refine_below=1.0, max_rounds=1))
    tracker._refinement_candidates = lambda: [(0.0, 2, 1)]  # frame 2 is the worst
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predictor, "propagate_in_video", recorded_pass)
        patch.setattr(predictor, "add_new_points_or_box", recorded_click)
        labels, stats = tracker.run()
    assert stats["refinement_rounds"] == 1 and len(passes) == 2
    ((frame, corrected),) = corrections
    assert frame == 2 and sorted(passes[1]) == [2, 3, 4, 5]
    assert torch.equal(passes[1][2], corrected) and not torch.equal(corrected, passes[0][2])
    assert np.array_equal(labels[2], labels_from_logits([1], corrected))
    for later in (3, 4, 5):
        assert (passes[1][later] - passes[0][later]).abs().max() > 1e-3, later
    assert not predictor.add_all_frames_to_correct_as_cond  # sam2's default again


def _davis_root(tmp_path: Path, names=("chair",)) -> Path:
    root = tmp_path / "DAVIS"
    for name in names:
        shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / name)
        shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / name)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def _eval(root: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "eval",
            "--dataset",
            "davis",
            "--root",
            str(root),
            "--out",
            str(out),
            "--image-size",
            str(TINY_SIZE),
            "--random-weights",
            *extra,
        ]
    )


def test_eval_end_to_end_writes_masks_csvs_and_counts(tmp_path, capsys):
    root = _davis_root(tmp_path)
    out = tmp_path / "run"
    assert _eval(root, out, "--max-rounds", "2") == 0
    assert sorted(p.name for p in (out / "masks" / "chair").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    with open(out / "global_results-val.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    with open(out / "per-sequence_results-val.csv") as stream:
        assert [row[0] for row in csv.reader(stream)] == ["Sequence", "chair_1"]
    report = json.loads((out / "report.json").read_text())
    overall = report["overall"]
    assert overall["sequences"] == 1 and overall["objects"] == 1 and overall["frames"] == 6
    for key in (
        "J-Mean",
        "F-Mean",
        "J&F-Mean",
        "fps",
        "peak_memory_mib",
        "memory_bank_bytes_per_frame",
        "kept_fraction",
        "refinement_rounds",
        "clicks",
    ):
        assert key in overall
    record = json.loads((out / "sequences" / "chair.json").read_text())
    # random weights: every frame is poor, so refinement runs to its limit
    assert record["refinement_rounds"] == 2
    assert 1 + 1 <= record["clicks"] <= 1 + 2 * 3
    assert len(record["j"]["1"]) == 4  # frames 1..4: the first and last are not evaluated
    assert overall["kept_fraction"] == pytest.approx(20 / 64)  # retention 0.3 of an 8x8 grid
    # the saved masks score exactly as the official procedure on them gives
    assert main(["score", "--gt-root", str(root), "--results", str(out / "masks"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "global_results-val.csv").read_text() == (out / "global_results-val.csv").read_text()
    assert "J&F" in capsys.readouterr().out
    # the run folder as --results: said where its masks are (it named the CSVs there, and
    # --overwrite, which then found no results folder run/chair), before anything is written
    before = {p: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for overwrite in ((), ("--overwrite",)):
        assert main(["score", "--gt-root", str(root), "--results", str(out), *overwrite]) == 2
        assert f"did you mean --results {out / 'masks'}?" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_kept_fraction_and_bank_bytes_are_those_of_the_first_pass(tmp_path):
    """Each correction makes its frame a dense conditioning frame: once every tracked frame had
    been corrected, a sequence reported kept 1.00 and a bank of 0 bytes, whatever the retention."""
    root = _davis_root(tmp_path)
    for folder in ("JPEGImages", "Annotations"):
        for frame in sorted((root / folder / "480p" / "chair").iterdir())[3:]:
            frame.unlink()
    assert _eval(root, tmp_path / "run", "--max-rounds", "5", "--refine-below", "1") == 0
    record = json.loads((tmp_path / "run" / "sequences" / "chair.json").read_text())
    assert record["refinement_rounds"] == 5
    assert record["kept_fraction"] == pytest.approx(20 / 64)  # retention 0.3 of an 8x8 grid
    assert record["memory_bank_bytes_per_frame"] > 0


def test_refinement_stops_when_frames_are_good(tmp_path):
    root = _davis_root(tmp_path)
    assert _eval(root, tmp_path / "run", "--refine-below", "0", "--method", "sam2") == 0
    record = json.loads((tmp_path / "run" / "sequences" / "chair.json").read_text())
    assert record["refinement_rounds"] == 0 and record["clicks"] == 1 and record["kept_fraction"] == 1.0


def _eval_interrupted_on(name: str, root: Path, out: Path, monkeypatch, *, started: list | None = None) -> int:
    """``eval`` (no refinement) with Ctrl-C pressed when the sequence ``name`` starts; the
    sequences started are appended to ``started``."""
    original_run = evaluate.SequenceTracker.run

    def interrupted(self):
        if started is not None:
            started.append(self.sequence.name)
        if self.sequence.name == name:
            raise KeyboardInterrupt
        return original_run(self)

    with monkeypatch.context() as patch:
        patch.setattr(evaluate.SequenceTracker, "run", interrupted)
        return _eval(root, out, "--max-rounds", "0")


def test_interrupted_eval_resumes_without_redoing_finished_sequences(tmp_path, monkeypatch, capsys):
    root = _davis_root(tmp_path, names=("chair", "chair_again"))
    out = tmp_path / "run"
    original_run = evaluate.SequenceTracker.run
    started: list[str] = []
    assert _eval_interrupted_on("chair_again", root, out, monkeypatch, started=started) == 130
    assert (out / "sequences" / "chair.json").is_file() and not (out / "sequences" / "chair_again.json").exists()
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["chair"]  # nothing half-written

    def counted(self):
        started.append(self.sequence.name)
        return original_run(self)

    started.clear()
    monkeypatch.setattr(evaluate.SequenceTracker, "run", counted)
    capsys.readouterr()
    assert _eval(root, out, "--max-rounds", "0") == 0
    assert started == ["chair_again"]  # chair was not tracked again
    # progress counts what is left to run, not the finished sequence as if run in no time
    assert "evaluating: 0/1 sequences" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["overall"]["sequences"] == 2
    # a record left empty (a machine that crashed as it was written): named, with what to do
    (out / "sequences" / "chair_again.json").write_text("")
    capsys.readouterr()
    assert _eval(root, out, "--max-rounds", "0") == 2
    assert f"the record of sequence chair_again, {out / 'sequences' / 'chair_again.json'}, cannot be read" in (
        capsys.readouterr().err
    )
    (out / "sequences" / "chair_again.json").unlink()
    assert _eval(root, out, "--max-rounds", "0") == 0
    assert started == ["chair_again", "chair_again"]
    started.remove("chair_again")
    # another setting in the same folder is refused, not mixed in
    assert _eval(root, out, "--max-rounds", "0", "--retention", "0.5") == 2
    # but not bounded memory, which gives the same masks: the run resumes, nothing is tracked again
    assert _eval(root, out, "--max-rounds", "0", "--unbounded-memory") == 0
    assert started == ["chair_again"]


def test_overwrite_deletes_only_what_the_run_wrote_and_a_resumed_run_no_older_results(tmp_path, monkeypatch, capsys):
    root = _davis_root(tmp_path, names=("chair", "chair_again"))
    out = tmp_path / "run"
    assert _eval(root, out, "--max-rounds", "0", "--limit", "1") == 0
    assert (out / "report.json").is_file() and (out / "global_results-val.csv").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    (out / "plots" / "p.png").write_bytes(b"png")
    # resumed over both sequences and interrupted: the results of the first sequence alone are gone
    assert _eval_interrupted_on("chair_again", root, out, monkeypatch) == 130
    assert not (out / "report.json").exists() and not list(out.glob("*.csv")) and not (out / "summary.json").exists()
    assert (out / "sequences" / "chair.json").is_file()  # what was done is kept
    # a file of the user's among the masks: named (not the sequence's folder, which the run
    # wrote), nothing deleted (the run writes there again)
    (out / "masks" / "mine.txt").write_text("mine")
    (out / "masks" / "chair" / "note.txt").write_text("mine")
    (out / "masks" / "chair" / "plots").mkdir()
    assert _eval(root, out, "--max-rounds", "0", "--overwrite") == 2
    assert (
        f"--out {out} holds masks/chair/note.txt, masks/chair/plots/, masks/mine.txt, which the run did not write"
        in capsys.readouterr().err
    )
    assert (out / "sequences" / "chair.json").is_file() and (out / "run.json").is_file()
    for index in range(5):
        (out / "masks" / "chair" / f"note{index}.txt").write_text("mine")
    assert _eval(root, out, "--max-rounds", "0", "--overwrite") == 2
    assert (
        "holds masks/chair/note.txt, masks/chair/note0.txt, masks/chair/note1.txt, masks/chair/note2.txt, "
        in (error := capsys.readouterr().err)
        and "note3.txt and 3 more, which the run did not write" in error
    )
    assert sorted(p.name for p in (out / "masks" / "chair").iterdir())[:2] == ["00000.png", "00001.png"]
    for path in (out / "masks" / "chair").iterdir():
        if path.suffix != ".png":
            path.rmdir() if path.is_dir() else path.unlink()
    (out / "masks" / "mine.txt").unlink()
    staging = out / "masks" / ".chair_again.tmp-99999-killed"  # a killed run's staging folder
    staging.mkdir()
    shutil.copy(out / "masks" / "chair" / "00000.png", staging / "00000.png")
    assert _eval(root, out, "--max-rounds", "0", "--overwrite") == 0
    assert not staging.exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "global_results-val.csv",
        "masks",
        "notes.txt",
        "per-sequence_results-val.csv",
        "plots",
        "report.json",
        "run.json",
        "sequences",
        "summary.json",
    ]
    assert (out / "notes.txt").read_text() == "mine" and (out / "plots" / "p.png").read_bytes() == b"png"
    assert json.loads((out / "report.json").read_text())["overall"]["sequences"] == 2
    # the finished run again, stopped before its results are written anew: they stay (nothing was pending)
    with monkeypatch.context() as patch:
        patch.setattr(evaluate, "summarize", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        assert _eval(root, out, "--max-rounds", "0") == 130
    assert json.loads((out / "report.json").read_text())["overall"]["sequences"] == 2


def test_a_run_resumed_with_fewer_sequences_reports_those_and_says_so(tmp_path, capsys):
    """A finished run resumed with --sequences (or --limit) rewrote report.json and the CSVs
    with those sequences only, silently."""
    root = _davis_root(tmp_path, names=("chair", "chair_again"))
    out = tmp_path / "run"
    assert _eval(root, out, "--max-rounds", "0") == 0
    capsys.readouterr()
    assert _eval(root, out, "--max-rounds", "0", "--sequences", "chair_again") == 0
    assert (
        f"the report covers 1 of the 2 sequences done in {out} (--sequences); run without --sequences for all\n"
        in capsys.readouterr().err
    )
    report = json.loads((out / "report.json").read_text())
    assert [row["sequence"] for row in report["per_sequence"]] == ["chair_again"]
    with open(out / "per-sequence_results-val.csv") as stream:
        assert [row[0] for row in csv.reader(stream)] == ["Sequence", "chair_again_1"]
    assert _eval(root, out, "--max-rounds", "0", "--limit", "1") == 0
    assert "the report covers 1 of the 2 sequences done in" in (error := capsys.readouterr().err)
    assert "(--limit); run without --limit for all" in error
    assert _eval(root, out, "--max-rounds", "0") == 0
    assert "the report covers" not in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["overall"]["sequences"] == 2


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    """As writers say it: PIL's save, like a write or a close, names no file."""
    import errno

    from PIL import Image

    root = _davis_root(tmp_path)
    out = tmp_path / "run"
    save = Image.Image.save

    def full_disk(image, target, *args, **kwargs):
        if str(target).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(image, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    assert _eval(root, out, "--max-rounds", "0") == 2
    error = capsys.readouterr().err
    (line,) = [line for line in error.splitlines() if line.startswith("sam2prune: error: ")]
    assert line == f"sam2prune: error: cannot write {out / 'masks' / 'chair' / '00000.png'}: No space left on device"
    assert "Traceback" not in error
    assert sorted(p.name for p in (out / "masks").iterdir()) == [] and not list((out / "sequences").iterdir())


def test_a_run_resumes_with_its_checkpoint_named_another_way(tmp_path, monkeypatch, capsys):
    import torch

    root = _davis_root(tmp_path)
    torch.save({"model": build_random().state_dict()}, tmp_path / "ck.pt")
    monkeypatch.chdir(tmp_path)
    command = ["eval", "--dataset", "davis", "--root", str(root), "--out", "run", "--image-size", str(TINY_SIZE)]
    assert main([*command, "--max-rounds", "0", "--checkpoint", "ck.pt"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["checkpoint"] == str(tmp_path / "ck.pt")
    capsys.readouterr()
    assert main([*command, "--max-rounds", "0", "--checkpoint", str(tmp_path / "ck.pt")]) == 0
    assert "resuming" in capsys.readouterr().err


def test_eval_gpu_options_reach_the_predictor_and_the_run_settings(tmp_path, capsys, monkeypatch):
    from sam2prune.predictor import PrunedSAM2VideoPredictor

    root = _davis_root(tmp_path)
    modes = []
    original = PrunedSAM2VideoPredictor.set_static_step
    monkeypatch.setattr(
        PrunedSAM2VideoPredictor, "set_static_step", lambda self, mode: modes.append(mode) or original(self, mode)
    )
    out = tmp_path / "run"
    assert _eval(root, out, "--max-rounds", "0", "--static-step", "buffers") == 0
    assert modes == ["buffers"]
    settings = json.loads((out / "run.json").read_text())
    assert settings["static_step"] == "buffers" and settings["bf16"] is False
    capsys.readouterr()
    assert _eval(root, out, "--max-rounds", "0") == 2  # another static step is another run
    assert 'holds a run with other settings (static_step "buffers" there, "off" now)' in capsys.readouterr().err
    # a run made before these settings existed (the configs' own too) resumes with their defaults
    saved = {key: value for key, value in settings.items() if key not in ("bf16", "static_step")}
    saved["pruning"] = {key: value for key, value in saved["pruning"].items() if key != "mc_passes"}
    saved["protocol"] = {key: value for key, value in saved["protocol"].items() if key != "max_rounds"}
    (out / "run.json").write_text(json.dumps(saved))
    assert _eval(root, out, "--max-rounds", "0") == 2  # the default of max_rounds is not 0
    assert "(protocol.max_rounds 10 there, 0 now)" in capsys.readouterr().err
    assert _eval(root, out) == 0
    # but not one made when corrections were lost (tracking on from a corrected frame wrote over it)
    (out / "run.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "protocol_revision"}))
    assert _eval(root, out) == 2
    assert "(protocol_revision 1 there, 2 now)" in capsys.readouterr().err
    for extra, expected in (
        (["--device", "cpu", "--bf16"], "--bf16 (bfloat16 autocast) is for CUDA devices; this run is on cpu"),
        (["--device", "cpu", "--static-step", "graphs"], "captures CUDA graphs: the predictor runs on cpu"),
        (["--method", "sam2", "--static-step", "buffers"], "it has no effect with --method sam2"),
    ):
        assert _eval(root, tmp_path / "refused", *extra) == 2
        assert expected in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()


def test_a_sequences_results_do_not_depend_on_the_sequences_run_before_it(tmp_path):
    # Monte-Carlo dropout draws random masks, from a stream seeded per frame, so the same
    # video gives the same kept tokens whether it runs first or after another (in a resumed run,
    # on another Ray worker)
    root = _davis_root(tmp_path, names=("chair", "chair_again"))
    mc = ["--signals", "uncertainty", "--uncertainty", "mc", "--mc-passes", "2", "--max-rounds", "0"]
    assert _eval(root, tmp_path / "run", *mc) == 0
    with (
        np.load(tmp_path / "run" / "sequences" / "chair.kept.npz") as first,
        np.load(tmp_path / "run" / "sequences" / "chair_again.kept.npz") as second,
    ):
        assert first.files == second.files
        assert all(np.array_equal(first[key], second[key]) for key in first.files)
    assert (tmp_path / "run" / "masks" / "chair" / "00005.png").read_bytes() == (
        tmp_path / "run" / "masks" / "chair_again" / "00005.png"
    ).read_bytes()


def test_eval_limit_and_bad_arguments(tmp_path, capsys, monkeypatch):
    root = _davis_root(tmp_path, names=("chair", "chair_again"))
    assert _eval(root, tmp_path / "one", "--max-rounds", "0", "--limit", "1") == 0
    assert json.loads((tmp_path / "one" / "report.json").read_text())["overall"]["sequences"] == 1
    (root / "ImageSets" / "2017" / "val.txt").unlink()  # named sequences need no list; one named twice runs once
    assert _eval(root, tmp_path / "twice", "--max-rounds", "0", "--sequences", "chair", "chair") == 0
    assert json.loads((tmp_path / "twice" / "report.json").read_text())["overall"]["sequences"] == 1
    assert "--sequences: chair named more than once (each runs once)" in capsys.readouterr().err
    # repeated, the option adds up (the last one alone ran)
    assert _eval(root, tmp_path / "both", "--max-rounds", "0", "--sequences", "nope", "--sequences", "chair") == 2
    assert "sequence nope: frames folder " in capsys.readouterr().err
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\nchair_again\n")
    assert _eval(root, tmp_path / "x", "--sequences", "nope") == 2
    assert "--sequences: nope not in " in (error := capsys.readouterr().err) and "val.txt (2 sequences)" in error
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    (tmp_path / "busy" / "sub").mkdir()
    for overwrite in ((), ("--overwrite",)):  # a folder that holds no run is not deleted, --overwrite or not
        assert _eval(root, tmp_path / "busy", *overwrite) == 2
        assert "holds no sam2prune run (no run.json), so neither resuming nor --overwrite" in capsys.readouterr().err
        assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["file.txt", "sub"]
    # nor one whose run.json is another tool's, or not JSON
    for text in ('{"experiment": "mine"}', "not json"):
        (tmp_path / "busy" / "run.json").write_text(text)
        assert _eval(root, tmp_path / "busy", "--overwrite") == 2
        error = capsys.readouterr().err
        assert "holds no sam2prune run (run settings" in error and "so neither resuming nor --overwrite" in error
        assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["file.txt", "run.json", "sub"]
    import sam2prune.cli.eval as eval_command

    def not_built(*args, **kwargs):
        raise AssertionError("the model was built before the run's settings were compared")

    monkeypatch.setattr(eval_command, "build", not_built)  # refused before waiting for the model
    assert _eval(root, tmp_path / "one", "--max-rounds", "0", "--limit", "1", "--retention", "0.5") == 2
    assert "other settings (pruning.retention 0.3 there, 0.5 now); use another folder or --overwrite" in (
        capsys.readouterr().err
    )


def test_every_selected_sequence_is_checked_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    """An annotation of another size than its frames (or not a label image) and a DAVIS sequence
    of 2 frames were found once the model was built and the sequences before them tracked."""
    from PIL import Image

    import sam2prune.cli.eval as eval_command

    def built(*args, **kwargs):
        raise InputError("the model was built")

    monkeypatch.setattr(eval_command, "build", built)
    root = _davis_root(tmp_path, names=("chair", "late"))
    out = tmp_path / "run"
    path = root / "Annotations" / "480p" / "late" / "00004.png"
    with Image.open(path) as image:
        image.crop((0, 0, 719, 480)).save(path)
    assert _eval(root, out, "--max-rounds", "0") == 2
    assert (
        f"sequence late: annotation of frame 00004 ({path}) is 719x480 but the frames are 720x480"
        in capsys.readouterr().err
    )
    assert not out.exists()
    assert _eval(root, out, "--max-rounds", "0", "--sequences", "chair") == 2  # only the sequences selected
    assert "the model was built" in capsys.readouterr().err
    Image.new("RGB", (720, 480)).save(path)
    assert _eval(root, out, "--max-rounds", "0") == 2
    assert f"annotation {path} is an image of mode RGB; expected an indexed-palette or greyscale PNG" in (
        capsys.readouterr().err
    )
    shutil.copy(CHAIR_MASKS / "00004.png", path)
    for folder in ("JPEGImages", "Annotations"):
        for frame in sorted((root / folder / "480p" / "late").iterdir())[2:]:
            frame.unlink()
    assert _eval(root, out, "--max-rounds", "0") == 2
    assert (
        f"sequence late: 2 frames in {root / 'JPEGImages' / '480p' / 'late'}; the DAVIS evaluation needs at least 3"
        in capsys.readouterr().err
    )
    assert not out.exists()
    # a sweep too (its serial run built the model first)
    import sam2prune.cli.sweep as sweep_command

    monkeypatch.setattr(sweep_command, "build", built)
    sweep = ["sweep", "--dataset", "davis", "--root", str(root), "--out", str(out), "--image-size", str(TINY_SIZE)]
    assert main([*sweep, "--random-weights", "--max-rounds", "0", "--retention", "0.5"]) == 2
    assert "the DAVIS evaluation needs at least 3" in capsys.readouterr().err
    assert not out.exists()


def test_a_pass_that_fails_ends_its_progress_before_the_error_goes_on(capsys):
    """The progress of a pass stopped by an error was ended when the pass was collected, after
    the error was printed: a stray progress line came last."""
    sequence = _chair_sequence()

    def broken():
        raise InputError("frame 3 is broken")

    sequence.annotated = {**sequence.annotated, 3: broken}
    tracker = evaluate.SequenceTracker(build_random(), sequence, ProtocolConfig(max_rounds=0))
    capsys.readouterr()
    try:
        tracker.run()
    except InputError as error:  # held, as the CLI holds it while it prints it
        assert str(error) == "frame 3 is broken"
        assert "propagate in video: 3/6 frames" in capsys.readouterr().err
    else:
        pytest.fail("the broken frame was not read")


def test_report_and_sweep(tmp_path, capsys):
    root = _davis_root(tmp_path)
    sweep_dir = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--dataset",
                "davis",
                "--root",
                str(root),
                "--out",
                str(sweep_dir),
                "--image-size",
                str(TINY_SIZE),
                "--random-weights",
                "--retention",
                "0.5",
                "0.25",
                "--max-rounds",
                "0",
                "--plot",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [
        "pruned_r0.25_router",
        "pruned_r0.5_router",
        "sam2",
    ]
    table = (sweep_dir / "report.md").read_text()
    assert "| davis | SAM 2 (sam2.1_hiera_t) |" in table
    assert "pruned r=0.5 router default [auto]" in table and "pruned r=0.25 router default [auto]" in table
    assert (sweep_dir / "tradeoff.png").stat().st_size > 0
    capsys.readouterr()
    assert (
        main(
            [
                "report",
                str(sweep_dir / "sam2"),
                str(sweep_dir / "pruned_r0.5_router"),
                "--out",
                str(tmp_path / "t.md"),
                "--plot",
                str(tmp_path / "t.png"),
            ]
        )
        == 0
    )
    assert sum(line.startswith("| davis |") for line in (tmp_path / "t.md").read_text().splitlines()) == 2
    assert "conditioning frames" not in (table := (tmp_path / "t.md").read_text()) and "differ in more" not in table
    # a run made when corrections were lost, beside one made since: said
    report_file = sweep_dir / "sam2" / "report.json"
    old = json.loads(report_file.read_text())
    del old["settings"]["protocol_revision"]
    report_file.write_text(json.dumps(old))
    assert main(["report", str(sweep_dir / "sam2"), str(sweep_dir / "pruned_r0.5_router")]) == 0
    table = capsys.readouterr().out
    assert "Note: SAM 2 (sam2.1_hiera_t) ran before sam2prune made corrected frames conditioning frames" in table
    assert "Note: the runs differ in more than method and pruning: protocol_revision." in table
    assert "over different sequences" not in table
    # a run over fewer sequences beside one over more (its clicks, a sum, fewer): said
    fewer = json.loads((sweep_dir / "pruned_r0.5_router" / "report.json").read_text())
    fewer["per_sequence"] = [*fewer["per_sequence"], {**fewer["per_sequence"][0], "sequence": "another"}]
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "report.json").write_text(json.dumps(fewer))
    assert main(["report", str(sweep_dir / "pruned_r0.5_router"), str(tmp_path / "more")]) == 0
    assert (
        "Note: the davis runs are over different sequences (pruned r=0.5 router default [auto] (sam2.1_hiera_t) ["
        in (table := capsys.readouterr().out)
    )
    assert ": 1 sequence; " in table and ": 2 sequences)" in table
    # two datasets, the static step of a pruned run beside SAM 2's: what a table compares, not noted
    other = json.loads((sweep_dir / "pruned_r0.5_router" / "report.json").read_text())
    other["settings"].update(dataset="mose", root="/data/MOSE", split="valid", static_step="buffers")
    (tmp_path / "mose").mkdir()
    (tmp_path / "mose" / "report.json").write_text(json.dumps(other))
    assert main(["report", str(tmp_path / "mose"), str(sweep_dir / "sam2")]) == 0
    assert "differ in more than method and pruning: protocol_revision." in (table := capsys.readouterr().out)
    (tmp_path / "nothing").mkdir()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no finished evaluation run" in capsys.readouterr().err
    half = tmp_path / "half"  # an interrupted run: finishing it is what to do
    (half / "sequences").mkdir(parents=True)
    (half / "run.json").write_text("{}")
    (half / "sequences" / "chair.json").write_text("{}")
    assert main(["report", str(half)]) == 2
    assert f"{half} holds an unfinished run (1 sequence done, no report.json yet): run the same" in (
        capsys.readouterr().err
    )


def test_a_sweep_runs_a_setting_given_twice_once_and_its_last_table_goes_while_runs_are_pending(tmp_path, capsys):
    """``--retention 0.5 0.5`` ran twice into one folder (on Ray, two tasks writing the same
    files); 0.3 and 0.3000001 shared a folder, the second refused only after the first had run; a
    failed sweep left the previous sweep's report.md describing runs that had changed."""
    root = _davis_root(tmp_path, names=("chair", "chair_again"))
    out = tmp_path / "sweep"
    tiny = ["--image-size", str(TINY_SIZE), "--random-weights", "--max-rounds", "0", "--no-baseline"]
    sweep = ["sweep", "--dataset", "davis", "--root", str(root), "--out", str(out), *tiny, "--scorer", "prior"]
    assert main([*sweep, "--retention", "0.3", "0.3000001"]) == 2
    assert (
        "two settings of the sweep (retention 0.3 and 0.3000001) would share the run folder pruned_r0.3_prior"
        in capsys.readouterr().err
    )
    assert not out.exists()
    assert main([*sweep, "--retention", "0.5", "0.5", "--sequences", "chair"]) == 0
    assert "settings given more than once (each runs once): pruned_r0.5_prior" in capsys.readouterr().err
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["pruned_r0.5_prior"]
    assert "(one model loaded," in (out / "report.md").read_text()  # --no-baseline: no unpruned model
    # another setting into the same folder: its table has its own runs, and says the others are there
    assert main([*sweep, "--retention", "0.25", "--sequences", "chair"]) == 0
    assert "holds runs of other settings, not in this table: pruned_r0.5_prior" in capsys.readouterr().err
    assert main([*sweep, "--retention", "0.25", "--sequences", "chair"]) == 0  # all done: no progress of nothing
    assert "evaluating: 0/0" not in capsys.readouterr().err
    # the next sequence fails: no table of the earlier sweep is left beside the changed runs (the
    # annotation cut short, its header whole: found when it is read, not by the checks before)
    broken = root / "Annotations" / "480p" / "chair_again" / "00003.png"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    assert main([*sweep, "--retention", "0.5"]) == 2
    assert not (out / "report.md").exists()


def test_a_sweep_replaces_only_its_own_table_and_plot(tmp_path, capsys, monkeypatch):
    """A table the user wrote with `report --out` into the sweep's folder was replaced by the next
    sweep (any run folder beside it made it an earlier sweep's); a sweep without --plot left the
    previous plot of other runs beside its new table; --out naming an eval run nested the sweep's
    runs inside it."""
    root = _davis_root(tmp_path)
    out = tmp_path / "sweep"
    tiny = ["--image-size", str(TINY_SIZE), "--random-weights", "--max-rounds", "0", "--no-baseline"]
    sweep = ["sweep", "--dataset", "davis", "--root", str(root), *tiny, "--scorer", "prior", "--retention", "0.5"]
    with monkeypatch.context() as patch:  # found before the runs, not after them
        patch.setitem(sys.modules, "matplotlib", None)
        assert main([*sweep, "--out", str(out), "--plot"]) == 2
    assert "--plot needs matplotlib" in last_error(capsys) and not out.exists()
    assert main([*sweep, "--out", str(out), "--plot"]) == 0
    assert (out / "tradeoff.png").is_file()
    # a sweep made before its files were recorded: its own table (and the plot beside it) known
    (out / ".sam2prune-sweep.json").unlink()
    assert main([*sweep, "--out", str(out)]) == 0  # nothing left to run: the table again, no plot
    assert (out / "report.md").is_file() and not (out / "tradeoff.png").exists()
    capsys.readouterr()
    marker = out / ".sam2prune-sweep.json"
    recorded = marker.read_bytes()
    marker.write_text('{"my": "plan"}')
    assert main([*sweep, "--out", str(out)]) == 2
    assert f"{marker} is not the record a sweep writes of its files" in last_error(capsys)
    assert marker.read_text() == '{"my": "plan"}'
    marker.write_bytes(recorded)
    assert main(["report", str(out / "pruned_r0.5_prior"), "--out", str(out / "report.md"), "--overwrite"]) == 0
    mine = (out / "report.md").read_bytes()
    assert main([*sweep, "--out", str(out), "--overwrite"]) == 2
    assert f"--out {out} holds report.md, not written by a sweep (or changed since)" in last_error(capsys)
    assert (out / "report.md").read_bytes() == mine
    marker.unlink()  # nor taken for a sweep's of before the record
    assert main([*sweep, "--out", str(out), "--overwrite"]) == 2
    assert f"--out {out} holds report.md, not written by a sweep (or changed since)" in last_error(capsys)
    assert (out / "report.md").read_bytes() == mine
    run = out / "pruned_r0.5_prior"
    before = snapshot(run)
    assert main([*sweep, "--out", str(run)]) == 2
    assert f"--out {run} is a run of `sam2prune eval` (run.json)" in last_error(capsys)
    assert snapshot(run) == before


def test_sweep_checks_every_setting_before_the_first_run(tmp_path, capsys, monkeypatch):
    """A mistake in a later setting of a sweep (a router file that does not exist, a run folder
    holding other settings) is found before any setting runs, not after the ones before it
    have run; files a sweep writes are not replaced in a folder holding no sweep."""
    root = _davis_root(tmp_path)
    out = tmp_path / "sweep"
    tiny = ["--image-size", str(TINY_SIZE), "--random-weights", "--max-rounds", "0"]
    sweep = ["sweep", "--dataset", "davis", "--root", str(root), "--out", str(out), *tiny, "--retention", "0.5"]
    missing = tmp_path / "nowhere.pt"
    assert main([*sweep, "--router", "learned", "--router-weights", str(missing)]) == 2
    assert f"{missing}" in capsys.readouterr().err
    assert not (out / "sam2" / "sequences" / "chair.json").exists()
    # a run folder of the last setting that holds other settings
    assert main([*sweep, "--no-baseline", "--scorer", "prior", "--prior-dilation", "1"]) == 0
    capsys.readouterr()
    import sam2prune.cli.sweep as sweep_command

    def not_built(*args, **kwargs):
        raise AssertionError("the model was built before the runs' settings were compared")

    with monkeypatch.context() as patch:
        patch.setattr(sweep_command, "build", not_built)  # refused before waiting for the model
        assert main([*sweep, "--scorer", "prior", "--prior-dilation", "2"]) == 2
    assert "holds a run with other settings (pruning.prior_dilation 1 there, 2 now)" in capsys.readouterr().err
    assert not (out / "sam2" / "sequences" / "chair.json").exists()
    # with --overwrite, a folder of the last setting that holds no run is refused before any run
    notes = out / "pruned_r0.5_uniform"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    assert main([*sweep, "--scorer", "uniform", "--overwrite"]) == 2
    assert "holds no sam2prune run" in capsys.readouterr().err
    assert not (out / "sam2" / "sequences" / "chair.json").exists() and (notes / "notes.txt").exists()
    # a user's report.md in a folder that holds no sweep
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    assert main([*sweep[:6], str(mine), *sweep[7:]]) == 2
    assert "holds report.md, not written by a sweep (or changed since)" in capsys.readouterr().err
    assert (mine / "report.md").read_text() == "my notes"


def test_sweep_over_signal_sets_and_mc_passes(tmp_path):
    root = _davis_root(tmp_path)
    out = tmp_path / "ablation"
    assert (
        main(
            [
                "sweep",
                "--dataset",
                "davis",
                "--root",
                str(root),
                "--out",
                str(out),
                "--image-size",
                str(TINY_SIZE),
                "--random-weights",
                "--retention",
                "0.5",
                "--max-rounds",
                "0",
                "--no-baseline",
                "--signal-sets",
                "prior",
                "visual,uncertainty",
                "--uncertainty",
                "mc",
                "--mc-passes",
                "2",
                "3",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "pruned_r0.5_router_prior_T2",
        "pruned_r0.5_router_prior_T3",
        "pruned_r0.5_router_visual+uncertainty_T2",
        "pruned_r0.5_router_visual+uncertainty_T3",
    ]
    settings = json.loads((out / "pruned_r0.5_router_visual+uncertainty_T3" / "run.json").read_text())
    assert settings["pruning"]["signals"] == ["visual", "uncertainty"] and settings["pruning"]["mc_passes"] == 3
    assert "MC T=3" in (out / "report.md").read_text()


def test_sweep_over_phrasings_reports_kept_token_overlap(tmp_path):
    root = _davis_root(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"chair/1": "a wooden chair"}))
    tiny = ["--image-size", str(TINY_SIZE), "--random-weights"]
    assert (
        main(
            [
                "fit-aligner",
                "--root",
                str(root),
                "--labels",
                str(tmp_path / "labels.json"),
                "--out",
                str(tmp_path / "a.pt"),
                *tiny,
            ]
        )
        == 0
    )
    out = tmp_path / "phrasings"
    assert (
        main(
            [
                "sweep",
                "--dataset",
                "davis",
                "--root",
                str(root),
                "--out",
                str(out),
                *tiny,
                "--retention",
                "0.3",
                "--max-rounds",
                "0",
                "--no-baseline",
                "--aligner",
                str(tmp_path / "a.pt"),
                "--texts",
                "a wooden chair",
                "furniture",
                "the thing I sit on",
            ]
        )
        == 0
    )
    labels = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert labels == ["pruned_r0.3_router_text1", "pruned_r0.3_router_text2", "pruned_r0.3_router_text3"]
    kept = np.load(out / "pruned_r0.3_router_text1" / "sequences" / "chair.kept.npz")
    assert len(kept.files) == 5 and all(len(kept[key]) == 20 for key in kept.files)  # frames 1..5, 30% of 64
    table = (out / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| pruned_r0.3_router |")]
    assert len(rows) == 3 and rows[0].endswith("| 1.000 |")  # the first phrasing against itself
    # each row's overlap is the mean IoU of its kept token sets with the first phrasing's, per frame
    first = np.load(out / "pruned_r0.3_router_text1" / "sequences" / "chair.kept.npz")
    for number, row in enumerate(rows, start=1):
        other = np.load(out / f"pruned_r0.3_router_text{number}" / "sequences" / "chair.kept.npz")
        ious = [len(set(first[k]) & set(other[k])) / len(set(first[k]) | set(other[k])) for k in first.files]
        assert float(row.split("|")[-2]) == pytest.approx(np.mean(ious), abs=5e-4)
    settings = json.loads((out / "pruned_r0.3_router_text3" / "run.json").read_text())
    assert settings["pruning"]["text"] == "the thing I sit on"


def test_a_run_resumes_with_its_aligner_named_another_way(tmp_path, monkeypatch, capsys):
    """The aligner was recorded as typed ("a.pt"), the checkpoint resolved: the same command with
    the file's absolute path was refused as a run with other settings."""
    from sam2prune.scorers.router.semantic import Aligner

    root = _davis_root(tmp_path)
    weight = torch.randn(257, 384, generator=torch.Generator().manual_seed(0)) * 0.1
    Aligner(weight, "minilm", "sam2.1_hiera_t", TINY_SIZE, True).save(tmp_path / "a.pt")
    monkeypatch.chdir(tmp_path)
    command = ["eval", "--dataset", "davis", "--root", str(root), "--out", str(tmp_path / "run"), "--text", "a chair"]
    command += ["--image-size", str(TINY_SIZE), "--random-weights", "--max-rounds", "0"]
    assert main([*command, "--aligner", "a.pt"]) == 0
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert settings["pruning"]["aligner"] == str((tmp_path / "a.pt").resolve())
    assert main([*command, "--aligner", str(tmp_path / "a.pt")]) == 0
    assert "resuming" in capsys.readouterr().err


def test_the_tradeoff_plot_has_one_legend_below_its_panels_and_tells_baselines_apart(tmp_path, monkeypatch):
    """Legends of long run labels were drawn over both panels; two SAM 2 runs were unlabelled
    crosses of one colour; a plot of random weights did not say so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sam2prune.evaluation import report as report_module

    def run(method, folder, jf, fps, retention=None):
        pruning = None if retention is None else {"retention": retention, "scorer": "prior"}
        settings = {"dataset": "davis", "method": method, "model": "sam2.1_hiera_t", "checkpoint": None}
        return {
            "settings": {**settings, "pruning": pruning},
            "overall": {"J&F-Mean": jf, "fps": fps},
            "run_dir": folder,
        }

    reports = [
        run("sam2", "runs/a/sam2", 0.7, 10.0),
        run("sam2", "runs/b/sam2", 0.71, 9.0),
        run("pruned", "runs/a/pruned", 0.69, 15.0, 0.3),
        run("pruned", "runs/a/pruned_r0.5", 0.7, 12.0, 0.5),
    ]
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # kept open to be inspected
    report_module.plot_tradeoff(tmp_path / "t.png", reports)
    (figure,) = figures
    assert (tmp_path / "t.png").stat().st_size > 0
    assert all(axes.get_legend() is None for axes in figure.axes) and len(figure.legends) == 1
    names = [text.get_text() for text in figure.legends[0].get_texts()]
    assert names == [
        "davis",
        "davis: SAM 2 (sam2.1_hiera_t) [runs/a/sam2]",
        "davis: SAM 2 (sam2.1_hiera_t) [runs/b/sam2]",
    ]
    crosses = [line for line in figure.axes[0].get_lines() if line.get_marker() == "x"]
    assert len({line.get_color() for line in crosses}) == 2
    assert any("RANDOM weights" in text.get_text() for text in figure.texts)
    legend_top = figure.legends[0].get_window_extent().y1
    assert all(legend_top < axes.get_window_extent().y0 for axes in figure.axes)
    close(figure)


def test_a_sweep_runs_each_phrasing_once_and_a_signal_set_without_text_without_one(caplog, monkeypatch):
    """`--texts A A` ran A twice; a signal set without the text signal ran once per phrasing,
    each the same run, and the phrasing table listed them as if the wording had no effect."""
    import logging

    from sam2prune.cli import build_parser
    from sam2prune.cli import sweep as sweep_command

    arguments = ["sweep", "--dataset", "davis", "--root", "DAVIS", "--out", "runs", "--random-weights"]
    arguments += ["--retention", "0.3", "--no-baseline", "--signal-sets", "visual,prior", "visual,text"]
    arguments += ["--texts", "a chair", "furniture", "a chair", "--aligner", "a.pt"]
    monkeypatch.setattr(logging.getLogger("sam2prune"), "propagate", True)
    with caplog.at_level("WARNING", logger="sam2prune"):
        grid = sweep_command._sweep_grid(build_parser().parse_args(arguments))
    assert [(label, base, config.text) for config, label, base in grid] == [
        ("pruned_r0.3_router_visual+prior", None, None),
        ("pruned_r0.3_router_visual+text_text1", "pruned_r0.3_router_visual+text", "a chair"),
        ("pruned_r0.3_router_visual+text_text2", "pruned_r0.3_router_visual+text", "furniture"),
    ]
    assert "--texts given more than once (each runs once): 'a chair'" in caplog.text
