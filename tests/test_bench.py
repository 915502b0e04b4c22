"""`sam2prune bench`: the documented JSON, table and plot; a headline run with nothing installed;
sam2's own predictors as references (the same masks as sam2prune's baseline); several objects;
the profiler summary; the lowered compile mode of sam2's vos_optimized predictor."""

from __future__ import annotations

import json
import os
import shutil
import stat
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sam2.modeling.sam2_base import SAM2Base

from sam2prune import bench as bench_module
from sam2prune.cli import embedded_clip, main
from sam2prune.data.video import VideoSource
from sam2prune.errors import InputError
from sam2prune.models import official_predictor, torch_compile_mode
from sam2prune.predictor.baseline import init_state_from

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TINY_SIZE, build_random

RUN_KEYS = {
    "ms_per_frame",
    "components_ms",
    "components_source",
    "memory_bank_bytes_per_frame",
    "peak_rss_mib",
    "frame_ms",
    "objects_tracked",
    "warmup_s",
    "profile",
    "speedup",
}
COMPONENTS = {"image_encoder", "token_scoring", "memory_attention", "memory_encoder", "mask_decoder", "static_step"}
# one thread: these runs time nothing, and a CI machine's other jobs do not stall them
TINY = ["--image-size", str(TINY_SIZE), "--threads", "1"]


def test_short_bench_writes_json_table_and_plot(tmp_path, capsys, monkeypatch):
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    # sam2's compiled predictor, its compilation stalling: given up after --compile-timeout
    compile_calls = []

    def stalling_compile(model=None, **kwargs):
        compile_calls.append(kwargs)

        def stalled(*args, **kw):
            time.sleep(60)
            return model(*args, **kw)

        return stalled

    monkeypatch.setattr(torch, "compile", stalling_compile)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    code = main(
        [
            "bench",
            *TINY,
            "--frames",
            "10",
            "--retention",
            "1.0",
            "0.3",
            "--profile-frames",
            "2",
            "--compile-mode",
            "default",
            "--compile-timeout",
            "6",
            "--json",
            str(json_path),
            "--plot",
            str(plot_path),
        ]
    )
    assert code == 0
    result = json.loads(json_path.read_text())
    assert result["complete"] is True
    sam2, sam2prune, vos = result["references"]
    assert (sam2["method"], sam2prune["method"], vos["method"]) == ("sam2", "sam2prune", "sam2-vos")
    assert sam2["class"] == "sam2.sam2_video_predictor.SAM2VideoPredictor"
    assert sam2prune["class"] == "sam2prune.predictor.baseline.SAM2Predictor"
    assert vos["class"] == "sam2.sam2_video_predictor.SAM2VideoPredictorVOS" and "ms_per_frame" not in vos
    assert "took more than 6 s" in vos["error"] and vos["compile_mode"] == "default"
    # one precision per table: a row over 100 ms keeps its decimal where another is under it
    mixed = json.loads(json_path.read_text())
    mixed["references"][0]["ms_per_frame"], mixed["pruned"][1]["ms_per_frame"] = 150.04, 68.64
    assert "| 150.0 |" in (mixed_table := bench_module.markdown_table(mixed)) and "| 68.6 |" in mixed_table
    assert vos["sam2_compile_mode"] == "max-autotune" and len(vos["compile_calls"]) == 5
    assert [call["mode"] for call in compile_calls] == ["default"] * 5
    assert result["reference"] == "sam2" and result["baseline"] == sam2
    assert [run["retention"] for run in result["pruned"]] == [1.0, 0.3]
    full, pruned = result["pruned"]
    for run in (sam2, sam2prune, full, pruned):
        assert set(run) >= RUN_KEYS and set(run["components_ms"]) == COMPONENTS
        assert run["speedup"] == sam2["ms_per_frame"] / run["ms_per_frame"] and len(run["frame_ms"]) == 10
        assert run["ms_per_frame"] == pytest.approx(float(np.median(run["frame_ms"][8:])), abs=0.01)
        assert run["objects_tracked"] == 1 and run["components_source"] == bench_module.COMPONENTS_WALL_CLOCK
        profile = run["profile"]
        assert profile["frames"] == [8, 9] and profile["host_ops_per_frame"] > 100 and profile["kernels_per_frame"] == 0
    assert pruned["speedup_vs_retention_1"] == full["ms_per_frame"] / pruned["ms_per_frame"]
    assert "speedup_vs_retention_1" not in sam2
    for key in ("versions", "threads", "device", "image_size", "headline", "components", "prompts"):
        assert key in result
    assert result["image_size"] == TINY_SIZE and result["threads"] == 1 and result["versions"]["sam2"] == "1.1.0"
    assert result["precision"] == "float32" and result["objects"] == 1 and result["profile_frames"] == 2
    assert result["warmup_frames"] == 3  # the CPU default
    assert result["prompts"] == [{"obj_id": 1, "frame": 0, "points": [[200.0, 112.0]], "labels": [1]}]
    # every dense bank is sam2's own; retention 1.0 is the identity, 0.3 keeps about 30%
    assert sam2["memory_bank_bytes_per_frame"] == sam2prune["memory_bank_bytes_per_frame"]
    assert full["memory_bank_bytes_per_frame"] == sam2["memory_bank_bytes_per_frame"]
    assert full["components_ms"]["token_scoring"] == 0.0 and sam2["components_ms"]["token_scoring"] == 0.0
    assert 0.25 < pruned["memory_bank_bytes_per_frame"] / sam2["memory_bank_bytes_per_frame"] < 0.45
    assert pruned["kept_fraction"] == 20 / 64 and full["kept_fraction"] == 1.0 and sam2["kept_fraction"] == 1.0
    captured = capsys.readouterr()
    table, log = captured.out, captured.out + captured.err
    # sam2's own bar (its predictor is the reference) as plain lines, as ours, in a log
    assert "\r" not in captured.err and "it/s" not in captured.err
    # the other methods' profiles come before sam2's compiled predictor, which may stall
    assert log.rindex("profiling 2 steady-state frames") < log.index("building sam2 SAM2VideoPredictorVOS")
    for row in ("| sam2 SAM2VideoPredictor (eager) | - |", "| sam2prune SAM2Predictor (unpruned) | - |"):
        assert row in table
    assert "| pruned, retention 0.3 | 0.3 |" in table and "(torch.compile default): failed: " in table
    with Image.open(plot_path) as image:
        assert image.size[0] > 500


def test_headline_runs_have_nothing_installed_and_three_objects_are_tracked(tmp_path, monkeypatch):
    """With --objects 3: every predictor is given three objects, clicked at three places on frame
    0, and tracks them. The frames timed for ms/frame run with no wrapper on the predictor and no
    profiler; the components run and the profiled run have theirs (so the check can see them)."""
    phase = {"name": None}
    seen: list[tuple[str | None, int, bool, bool, int]] = []  # (phase, predictor, wrapped, profiled, objects)
    clicks: dict[int, set] = {}
    wrappable = {method for method, _ in bench_module.PREDICTOR_COMPONENTS}

    def in_phase(name, run):
        def call(*args, **kwargs):
            phase["name"] = name
            try:
                return run(*args, **kwargs)
            finally:
                phase["name"] = None

        return call

    for name in ("headline_run", "components_run", "profile_run"):
        monkeypatch.setattr(bench_module, name, in_phase(name, getattr(bench_module, name)))
    track_step = SAM2Base.track_step

    def spied_track_step(self, frame_idx, is_init_cond_frame, current_vision_feats, *args, **kwargs):
        wrapped = bool(wrappable & set(vars(self)))
        objects = current_vision_feats[-1].shape[1]  # [HW, B, C]: one step may track a batch of objects
        seen.append((phase["name"], id(self), wrapped, torch.autograd._profiler_enabled(), objects))
        return track_step(self, frame_idx, is_init_cond_frame, current_vision_feats, *args, **kwargs)

    monkeypatch.setattr(SAM2Base, "track_step", spied_track_step)
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    add_points = SAM2VideoPredictor.add_new_points_or_box

    def spied_add_points(self, inference_state, frame_idx, obj_id, points=None, labels=None, **kwargs):
        if phase["name"] == "headline_run":
            clicks.setdefault(id(self), set()).add((frame_idx, obj_id, tuple(points[0].tolist())))
        return add_points(self, inference_state, frame_idx, obj_id, points=points, labels=labels, **kwargs)

    monkeypatch.setattr(SAM2VideoPredictor, "add_new_points_or_box", spied_add_points)
    json_path = tmp_path / "b.json"
    arguments = ["bench", *TINY, "--frames", "9", "--objects", "3", "--retention", "0.3", "--profile-frames", "1"]
    assert main([*arguments, "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())

    headline = [entry for entry in seen if entry[0] == "headline_run"]
    predictors = {entry[1] for entry in headline}
    assert len(predictors) == 3  # sam2, sam2prune unpruned, pruned 0.3
    # 3 objects on 8 tracked frames (frame 0 is prompted), plus frame 0 once per click
    assert all(sum(entry[4] for entry in headline if entry[1] == p) == 3 * 8 + 3 for p in predictors)
    assert not any(wrapped or profiled for _, _, wrapped, profiled, _ in headline)
    assert any(entry[2] and not entry[3] for entry in seen if entry[0] == "components_run")
    assert any(entry[2] and entry[3] for entry in seen if entry[0] == "profile_run")
    assert len(clicks) == 3 and all(len(per_predictor) == 3 for per_predictor in clicks.values())
    points = next(iter(clicks.values()))
    assert len({point for _, _, point in points}) == 3 and {frame for frame, _, _ in points} == {0}
    assert all(per_predictor == points for per_predictor in clicks.values())
    assert result["objects"] == 3 and len(result["prompts"]) == 3
    assert "not measured on the CPU" in result["references"][2]["skipped"]
    assert all(run["objects_tracked"] == 3 for run in result["references"][:2] + result["pruned"])


def test_sam2s_own_predictor_gives_the_masks_of_sam2prunes_baseline():
    """float32 on the CPU, two objects: sam2's SAM2VideoPredictor built by the bench (same
    weights, frames read by sam2prune) gives exactly the masks of sam2prune's SAM2Predictor."""
    ours = build_random(seed=3)
    ours.batch_objects = False  # the per-object loop is sam2's bit for bit (batched: within 1e-5)
    official = official_predictor(ours)
    assert type(official).__module__ == "sam2.sam2_video_predictor" and type(official).__name__ == "SAM2VideoPredictor"
    source = VideoSource.open(embedded_clip()).head(6)
    masks = []
    for predictor in (ours, official):
        state = init_state_from(predictor, source)
        for obj_id, point in ((1, (200, 112)), (2, (112, 128))):
            predictor.add_new_points_or_box(state, 0, obj_id, points=np.array([point], np.float32), labels=[1])
        masks.append([m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=0)])
    assert len(masks[0]) == 6 and all(torch.equal(a, b) for a, b in zip(*masks, strict=True))
    assert any((m > 0).any() for m in masks[1])  # not two empty tracks


def test_sam2s_vos_predictor_is_built_with_the_lowered_compile_mode():
    """sam2's vos_optimized predictor compiles the image encoder and four components with
    max-autotune; built inside torch_compile_mode each compile call gets the lowered mode and
    keeps sam2's other arguments (nothing is compiled until the first call)."""
    calls: list[dict] = []
    vos = official_predictor(build_random(), vos_optimized=True, compile_mode="default", compile_calls=calls)
    assert type(vos).__name__ == "SAM2VideoPredictorVOS"
    assert sorted(call["target"] for call in calls) == [
        "ImageEncoder.forward",
        "MaskDecoder.forward",
        "MemoryAttention.forward",
        "MemoryEncoder.forward",
        "PromptEncoder.forward",
    ]
    assert all(call["asked"] == "max-autotune" and call["mode"] == "default" for call in calls)
    assert {call["target"]: call["dynamic"] for call in calls}["MemoryAttention.forward"] is True
    assert torch.compile.__module__.startswith("torch")  # restored
    with pytest.raises(InputError, match=r"unknown torch\.compile mode"), torch_compile_mode("fastest"):
        pass


def test_time_limit_interrupts_the_block():
    start = time.perf_counter()
    with (
        pytest.raises(TimeoutError, match=r"compiling took more than 0\.2 s"),
        bench_module.time_limit(0.2, "compiling"),
    ):
        time.sleep(5)
    assert time.perf_counter() - start < 2
    with bench_module.time_limit(None, "anything"):
        time.sleep(0.01)


def test_time_limit_is_not_lost_in_a_callback_that_swallows_it(monkeypatch):
    """Python ignores an exception raised in a weakref callback (as in torch.compile's caches):
    the limit raises again until the block is left."""
    import sys
    import weakref

    ignored: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: ignored.append(unraisable.exc_value))

    class Key:
        pass

    def swallowing_callback(ref):
        time.sleep(0.5)  # the first alarm fires here and is ignored

    with pytest.raises(TimeoutError), bench_module.time_limit(0.2, "compiling"):
        key = Key()
        reference = weakref.ref(key, swallowing_callback)
        del key  # the callback runs now
        time.sleep(5)
    assert reference() is None
    # the first alarm was raised in the callback, and Python ignored it there
    assert len(ignored) == 1 and isinstance(ignored[0], TimeoutError)


def test_compile_mode_wrapper_replaces_only_the_mode(monkeypatch):
    received = []
    monkeypatch.setattr(torch, "compile", lambda model=None, **kwargs: received.append(kwargs) or model)
    with torch_compile_mode("reduce-overhead"):
        assert torch.compile(len, mode="max-autotune", fullgraph=True, dynamic=False) is len
    assert received == [{"mode": "reduce-overhead", "fullgraph": True, "dynamic": False}]
    torch.compile(len, mode="max-autotune")
    assert received[-1] == {"mode": "max-autotune"}


def _event(name, device_type, *, us=0.0, device_us=0.0, cpu_us=0.0, annotation=False):
    return SimpleNamespace(
        name=name,
        device_type=device_type,
        is_user_annotation=annotation,
        time_range=SimpleNamespace(elapsed_us=lambda: us),
        device_time_total=device_us,
        cpu_time_total=cpu_us,
        self_cpu_time_total=cpu_us,
    )


def test_profile_summary_counts_kernels_copies_and_component_gpu_time():
    """torch.profiler's events of 2 frames on a GPU (built by hand: CI has no GPU)."""
    from torch.autograd import DeviceType

    cpu, cuda = DeviceType.CPU, DeviceType.CUDA
    prefix = bench_module.RANGE_PREFIX
    events = [
        _event(prefix + "image_encoder", cpu, device_us=3000, cpu_us=9000),
        _event(prefix + "image_encoder", cuda, us=3000, annotation=True),  # the range's device copy
        _event(prefix + "signal_uncertainty", cpu, device_us=1000),
        _event(prefix + "memory_attention", cpu, device_us=800),
        _event("aten::linear", cpu, cpu_us=50),
        _event("aten::copy_", cpu, cpu_us=10),
        _event("aten::copy_", cpu, cpu_us=10),
        _event("cudaLaunchKernel", cpu),
        _event("cudaLaunchKernel", cpu),
        _event("cudaStreamSynchronize", cpu),
        _event("cudaGraphLaunch", cpu),
        _event("ampere_sgemm_128x64", cuda, us=1500),
        _event("ampere_sgemm_128x64", cuda, us=1500),
        _event("elementwise_kernel", cuda, us=100),
        _event("Memcpy HtoD (Pageable -> Device)", cuda, us=40),
        _event("Memset (Device)", cuda, us=1),
    ]
    summary = bench_module.summarize_profile(events, [8, 9], on_gpu=True)
    assert summary.kernels_per_frame == 1.5 and summary.kernel_ms_per_frame == pytest.approx(1.55)
    assert summary.memcpy_per_frame == {"HtoD": 0.5}
    assert summary.host_ops_per_frame == 1.5 and summary.copy_ops_per_frame == 1.0
    assert summary.runtime_calls_per_frame == {
        "cudaLaunchKernel": 1.0,
        "cudaStreamSynchronize": 0.5,
        "cudaGraphLaunch": 0.5,
    }
    assert summary.graph_launches_per_frame == 0.5
    # the uncertainty probe runs inside the image encoder: it is counted as scoring
    assert summary.components_ms["image_encoder"] == pytest.approx(1.0)
    assert summary.components_ms["token_scoring"] == pytest.approx(0.5)
    assert summary.components_ms["memory_attention"] == pytest.approx(0.4)
    assert summary.signals_ms["uncertainty"] == pytest.approx(0.5)
    assert summary.top_kernels[0] == {"name": "ampere_sgemm_128x64", "per_frame": 1.0, "ms_per_frame": 1.5}
    on_cpu = bench_module.summarize_profile(events[:1], [8], on_gpu=False)
    assert on_cpu.components_ms["image_encoder"] == pytest.approx(9.0)


def test_a_short_clip_is_played_back_and_forth():
    source = VideoSource.open(embedded_clip())
    looped = source.looped(50)
    names = [path.name for path in looped.frame_files]
    assert len(looped) == 50 and len(set(looped.frame_names)) == 50
    assert names[:24] == [f"{i:05d}.jpg" for i in range(24)]
    assert names[24:47] == [f"{i:05d}.jpg" for i in range(22, -1, -1)][:23]
    assert names[46:50] == ["00000.jpg", "00001.jpg", "00002.jpg", "00003.jpg"]
    assert source.looped(5).frame_files == source.frame_files[:5]


def test_bench_counts_the_frames_run_as_the_static_step(tmp_path):
    json_path = tmp_path / "b.json"
    arguments = ["bench", *TINY, "--frames", "20", "--retention", "0.3", "--warmup", "1", "--static-step", "buffers"]
    assert main([*arguments, "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())
    assert result["static_step"] == "buffers"
    # the steady state of one object begins 15 tracked frames after its prompt on frame 0: 16-19
    (pruned,) = result["pruned"]
    assert pruned["static_frames"] == 4 and pruned["static_capture_errors"] == []
    assert "static step (buffers)" in pruned["label"]
    assert all(run["static_frames"] == 0 for run in result["references"] if "ms_per_frame" in run)
    # every method's steady state: the frames that replay the step (16 builds it), not frames 8-16
    assert result["steady_from_frame"] == 17
    assert pruned["components_ms"]["static_step"] > 0  # the step timed as a whole
    assert all(run["components_ms"]["static_step"] == 0 for run in result["references"] if "ms_per_frame" in run)
    for run in [pruned, *(run for run in result["references"] if "ms_per_frame" in run)]:
        assert run["ms_per_frame"] == pytest.approx(statistics.median(run["frame_ms"][17:]), abs=0.01)


def test_bench_with_the_static_step_needs_frames_past_its_first_replay(capsys):
    arguments = ["bench", *TINY, "--frames", "17", "--retention", "0.3", "--static-step", "buffers"]
    assert main(arguments) == 2
    assert (
        "starts at frame 17 (with --static-step, the first frame that replays the step once every memory window is full): track 18 frames or more"
        in (capsys.readouterr().err)
    )


def test_bench_tracks_from_the_first_prompted_frame(tmp_path, capsys):
    """Prompts on a later frame: every method tracks from there (sam2's own predictor could not
    track frames before them), the steady state counts from there; objects prompted on a later
    frame than that are refused outside bf16 autocast, where sam2's own predictor fails on them."""
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"objects": [{"obj_id": 1, "frame": 2, "points": [[300, 200]]}]}))
    json_path = tmp_path / "b.json"
    arguments = ["bench", str(CHAIR_FRAMES), *TINY, "--frames", "11", "--retention", "0.3", "--warmup", "1"]
    assert main([*arguments, "--profile-frames", "1", "--prompts", str(prompts), "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())
    assert result["first_tracked_frame"] == 2 and result["steady_from_frame"] == 10
    runs = [run for run in result["references"] + result["pruned"] if "ms_per_frame" in run]
    assert len(runs) == 3
    for run in runs:
        assert len(run["frame_ms"]) == 9  # frames 2-10
        assert run["ms_per_frame"] == pytest.approx(statistics.median(run["frame_ms"][8:]), abs=0.01)
        assert run["profile"]["frames"] == [10]  # the steady frame
    assert result["pruned"][0]["kept_fraction"] < 1
    late = {"obj_id": 2, "frame": 3, "points": [[100, 100]]}
    prompts.write_text(json.dumps({"objects": [*json.loads(prompts.read_text())["objects"], late]}))
    assert main([*arguments, "--prompts", str(prompts)]) == 2
    assert "object 2 is first prompted after frame 2, where tracking starts" in capsys.readouterr().err
    prompts.write_text(json.dumps({"objects": [{**late, "obj_id": 1}]}))
    assert main([*arguments, "--prompts", str(prompts)]) == 2
    message = "--frames 11: the steady state starts at frame 11 (once every memory window is full after the last prompt, on frame 3)"
    assert message in capsys.readouterr().err


def test_bench_needs_frames_past_the_memory_bank(capsys):
    assert main(["bench", "--image-size", str(TINY_SIZE), "--frames", "8"]) == 2
    assert "steady state" in capsys.readouterr().err


def test_bad_bench_options_are_refused(capsys, tmp_path):
    assert main(["bench", "--image-size", str(TINY_SIZE), "--frames", "10", "--device", "cpu", "--bf16"]) == 2
    assert "--bf16 (bfloat16 autocast) is for CUDA devices" in capsys.readouterr().err
    assert main(["bench", "--image-size", str(TINY_SIZE), "--frames", "10", "--warmup", "0"]) == 2
    assert "--warmup must be >= 1 frame, got 0" in capsys.readouterr().err
    assert main(["bench", "--frames", "10", "--objects", "0"]) == 2
    assert "--objects must be in 1..254" in capsys.readouterr().err
    assert main(["bench", "--frames", "10", "--profile-frames", "-1"]) == 2
    assert "--profile-frames must be >= 0" in capsys.readouterr().err
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"objects": [{"obj_id": 1, "points": [[10, 10]]}]}))
    assert main(["bench", "--frames", "10", "--objects", "2", "--prompts", str(prompts)]) == 2
    assert "--prompts gives every object's prompts" in capsys.readouterr().err
    late = tmp_path / "late.json"
    late.write_text(json.dumps({"objects": [{"obj_id": 1, "frame": 12, "points": [[10, 10]]}]}))
    assert main(["bench", "--frames", "10", "--prompts", str(late)]) == 2
    assert (
        "prompted on frame 12, but --frames 10 tracks frames 0..9: pass --frames 21 or more" in capsys.readouterr().err
    )
    assert main(["bench", "--frames", "10", "--objects", "2", "--point", "5,5"]) == 2
    assert "--point is the click of one object" in capsys.readouterr().err
    assert main(["bench", "--frames", "10", "--device", "cpu", "--static-step", "graphs"]) == 2
    assert "--static-step: static_step='graphs' captures CUDA graphs" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main(["bench", "--frames", "10", "--compile-mode", "fastest"])
    assert "invalid choice: 'fastest'" in capsys.readouterr().err
    assert main(["bench", "--frames", "10", "--device", "tpu"]) == 2
    assert "--device 'tpu' is not a device name: expected cpu, cuda or cuda:N" in capsys.readouterr().err
    # the results never overwrite an input, nor each other
    frames = tmp_path / "frames"
    shutil.copytree(CHAIR_FRAMES, frames)
    before = {path.name: path.read_bytes() for path in frames.iterdir()}
    for option, target, message in (
        ("--json", frames / "r.json", "lies inside the input VIDEO"),
        ("--plot", frames / "00000.jpg", "lies inside the input VIDEO"),
        ("--json", prompts, "is the input --prompts"),
    ):
        extra = ["--prompts", str(prompts)] if target == prompts else []
        assert main(["bench", str(frames), "--frames", "10", *extra, option, str(target)]) == 2
        assert message in capsys.readouterr().err
    shutil.copy(CHAIR_MASKS / "00000.png", tmp_path / "m.png")
    with_mask = tmp_path / "q.json"
    with_mask.write_text(json.dumps({"objects": [{"obj_id": 1, "frame": 0, "mask": "m.png"}]}))
    plot_over_mask = ["--prompts", str(with_mask), "--plot", str(tmp_path / "m.png")]
    assert main(["bench", str(frames), "--frames", "10", *plot_over_mask]) == 2
    assert "is the input mask of --prompts" in capsys.readouterr().err
    assert (tmp_path / "m.png").read_bytes() == (CHAIR_MASKS / "00000.png").read_bytes()
    both = str(tmp_path / "r.json")
    assert main(["bench", "--frames", "10", "--json", both, "--plot", both]) == 2
    assert "--json and --plot are the same file" in capsys.readouterr().err
    # an earlier result is replaced only with --overwrite (speed and --lengths alike)
    earlier = tmp_path / "earlier.json"
    earlier.write_text("{}")
    for mode in (["--frames", "10"], ["--lengths", "20"]):
        for option in ("--json", "--plot"):
            assert main(["bench", *mode, option, str(earlier)]) == 2
            assert f"{option} {earlier} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert earlier.read_text() == "{}"
    # a device or a pipe is not replaced by a file, --overwrite or not (as root: /dev/null)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["bench", "--frames", "10", "--json", str(fifo), "--overwrite"]) == 2
    assert f"--json {fifo} is not a regular file (a device, pipe or socket)" in capsys.readouterr().err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert main(["bench", "--frames", "10", "--json", str(earlier / "r.json")]) == 2
    assert f"folder {earlier} is a file, not a folder" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in frames.iterdir()} == before
    assert json.loads(prompts.read_text())["objects"][0]["obj_id"] == 1


def test_bench_lengths_measures_each_method_and_length_in_its_own_process(tmp_path, capsys):
    """bench --lengths: one fresh process per (method, length); the JSON lists every run with its
    peak RSS and steady ms/frame, the plot is written, and each run tracked every frame."""
    json_path, plot_path = tmp_path / "lengths.json", tmp_path / "lengths.png"
    arguments = ["bench", "--lengths", "10", "12", "--methods", "pruned-bounded", "sam2", *TINY]
    assert main([*arguments, "--json", str(json_path), "--plot", str(plot_path)]) == 0
    result = json.loads(json_path.read_text())
    runs = result["memory_vs_length"]
    assert [(run["method"], run["frames"]) for run in runs] == [
        ("pruned-bounded", 10),
        ("pruned-bounded", 12),
        ("sam2", 10),
        ("sam2", 12),
    ]
    for run in runs:
        assert run["error"] is None and len(run["frame_ms"]) == run["frames"]
        assert run["peak_rss_mib"] > 100 and run["ms_per_frame"] > 0 and run["peak_cuda_mib"] is None
    assert set(result["methods"]) == {"pruned-bounded", "sam2"} and result["image_size"] == TINY_SIZE
    assert result["complete"] is True and len(result["point"]) == 2
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "| pruned-bounded | 12 |" in captured.out and "| sam2 | 10 |" in captured.out
    assert "ms/frame at 10 frames is the median of 2 steady-state frames only" in captured.err


def test_a_lengths_benchmark_stopped_early_says_so_and_leaves_no_earlier_plot(tmp_path, monkeypatch):
    """A run stopped by Ctrl-C left a JSON without "complete" (as if finished) beside the plot of
    an earlier run."""
    from sam2prune import memory_bench

    def stopped_after_one_run(*, on_result, **_):
        on_result([memory_bench.LengthResult(method="sam2", frames=20, peak_rss_mib=800.0, ms_per_frame=90.0)])
        raise KeyboardInterrupt

    monkeypatch.setattr(memory_bench, "run_lengths", stopped_after_one_run)
    json_path, plot_path = tmp_path / "l.json", tmp_path / "l.png"
    json_path.write_text("{}")
    plot_path.write_bytes(b"an earlier plot")
    outputs = ["--json", str(json_path), "--plot", str(plot_path), "--overwrite"]
    assert main(["bench", "--lengths", "20", "40", "--methods", "sam2", *outputs, *TINY]) == 130
    result = json.loads(json_path.read_text())
    assert result["complete"] is False and [run["frames"] for run in result["memory_vs_length"]] == [20]
    assert not plot_path.exists()


def test_lengths_on_a_video_it_cannot_loop_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """A folder of PNG frames (or a video file): official SAM 2 reads JPEG folders, so --lengths
    loops only those; it was refused once the runs' weights were made (seconds, minutes for a
    checkpoint)."""
    from sam2prune import memory_bench

    def not_run(**kwargs):
        raise AssertionError("the runs started")

    monkeypatch.setattr(memory_bench, "run_lengths", not_run)
    with monkeypatch.context() as patch:  # --plot without matplotlib: found before the benchmark too
        patch.setattr(bench_module, "run_benchmark", not_run)
        patch.setitem(sys.modules, "matplotlib", None)
        assert main(["bench", "--plot", str(tmp_path / "b.png"), *TINY]) == 2
        assert "--plot needs matplotlib" in capsys.readouterr().err
    pngs = tmp_path / "pngs"
    shutil.copytree(CHAIR_MASKS, pngs)
    assert main(["bench", str(pngs), "--lengths", "20", *TINY]) == 2
    assert f"--lengths loops a folder of JPEG frames (official SAM 2 reads those); {pngs} is not one" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("lengths", [True, False])
def test_a_benchmark_stopped_before_it_measured_anything_leaves_earlier_results_as_they_were(
    tmp_path, monkeypatch, lengths
):
    """Ctrl-C before the first run ended (--overwrite): nothing new to keep, so the earlier JSON
    (which records its own settings) and its plot stay, untouched."""
    from sam2prune import bench, memory_bench

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(memory_bench, "run_lengths", stopped)
    monkeypatch.setattr(bench, "run_benchmark", stopped)
    json_path, plot_path = tmp_path / "l.json", tmp_path / "l.png"
    json_path.write_text('{"complete": true}')
    plot_path.write_bytes(b"an earlier plot")
    which = ["--lengths", "20", "--methods", "sam2"] if lengths else ["--retention", "0.3"]
    outputs = ["--json", str(json_path), "--plot", str(plot_path), "--overwrite"]
    assert main(["bench", *which, *outputs, *TINY]) == 130
    assert json_path.read_text() == '{"complete": true}' and plot_path.read_bytes() == b"an earlier plot"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lengths", "20", "8"], "each length must be > 8 frames (the steady state starts there), got 8"),
        (["--lengths", "20", "--methods", "sam3"], "--methods: expected some of"),
        (["--lengths", "20", "--frames", "30"], "--frames has no effect with --lengths"),
        (["--methods", "sam2"], "--methods chooses what --lengths measures"),
        (["--lengths", "20", "--retention", "0.3", "0.5"], "give one --retention"),
        (["--lengths", "20", "--static-step", "buffers"], "--static-step is measured by the speed benchmark"),
        # options of the speed benchmark that --lengths would ignore
        (["--lengths", "20", "--objects", "2", "--profile-frames", "3"], "--objects, --profile-frames have no effect"),
        (["--lengths", "20", "--compile-mode", "default"], "--compile-mode has no effect with --lengths"),
        # a value given twice would be measured twice
        (["--lengths", "20", "30", "20"], "--lengths: 20 given more than once"),
        (["--lengths", "20", "--methods", "sam2", "sam2"], "--methods: sam2 given more than once"),
        (["--lengths", "20", "--point", "5000,5000"], "--point: object 1: point (5000, 5000) is outside the 480x270"),
        (["--retention", "0.3", "0.3"], "--retention: 0.3 given more than once"),
        (["--plot", "bench.jpg"], "--plot bench.jpg: the plot is a PNG image; name it FILE.png"),
    ],
)
def test_bad_lengths_options_are_refused(capsys, extra, message):
    assert main(["bench", *TINY, *extra]) == 2
    assert message in capsys.readouterr().err


def test_gpu_tables_give_peak_memory_allocated_and_reserved():
    # a CUDA graph's pool is reserved, not allocated, between replays: both are shown
    assert bench_module.peak_memory({"peak_cuda_mib": 2047.4, "peak_cuda_reserved_mib": 2600.2}) == "2047 (2600)"
    assert bench_module.peak_memory({"peak_cuda_mib": 2047.4}) == "2047"


def test_the_static_steps_steady_state_waits_for_the_last_prompted_object():
    model = SimpleNamespace(num_maskmem=7, max_obj_ptrs_in_encoder=16)  # SAM 2.1's windows
    assert bench_module.steady_from_frame(model, "off", 48, last_prompt=5) == 13  # its bank full too
    assert bench_module.steady_from_frame(model, "graphs", 48) == 17  # 15 pointer frames, then a capture
    assert bench_module.steady_from_frame(model, "graphs", 48, last_prompt=5) == 22
    assert bench_module.steady_from_frame(model, "buffers", 10) == 11  # fewer frames than pointers: never


def test_bench_lengths_records_the_input_size_of_a_yaml_model(tmp_path, monkeypatch, capsys):
    """A YAML at 128 px was recorded (and said) to run at 1024 px."""
    import re
    from pathlib import Path

    import sam2

    from sam2prune import memory_bench
    from sam2prune.models import MODELS

    config = tmp_path / "my.yaml"
    text = (Path(sam2.__file__).parent / MODELS["sam2.1_hiera_t"].config).read_text()
    config.write_text(re.sub(r"image_size: \d+", f"image_size: {TINY_SIZE}", text))
    asked = {}

    def measured(*, on_result, image_size, **_):
        asked["image_size"] = image_size
        results = [memory_bench.LengthResult(method="sam2", frames=20, peak_rss_mib=800.0, ms_per_frame=90.0)]
        on_result(results)
        return results

    monkeypatch.setattr(memory_bench, "run_lengths", measured)
    json_path = tmp_path / "l.json"
    arguments = ["bench", "--lengths", "20", "--methods", "sam2", "--model", str(config), "--json", str(json_path)]
    assert main(arguments) == 0
    assert json.loads(json_path.read_text())["image_size"] == TINY_SIZE
    assert f"{config} at {TINY_SIZE} px" in capsys.readouterr().out
    assert asked["image_size"] is None  # each run builds the YAML at its own size


def test_a_failed_profile_or_compiled_reference_is_recorded_and_saved_as_it_happens(tmp_path, monkeypatch, capsys):
    """A profiled run that failed for an eager method ended the benchmark before sam2's compiled
    predictor was measured; the compiled predictor's failure reached the JSON only at the end (a
    run killed then kept no record of it)."""
    import sam2prune.cli.bench as bench_command

    def failing_profile(method, *args, **kwargs):
        if method.key == "sam2":
            raise RuntimeError("CUPTI went away")
        return profile_run(method, *args, **kwargs)

    def failing_compile(baseline, *, vos_optimized=False, **kwargs):
        if vos_optimized:
            raise RuntimeError("inductor failed")
        return official(baseline, vos_optimized=vos_optimized, **kwargs)

    import sam2prune.models as models_module

    profile_run, official = bench_module.profile_run, models_module.official_predictor
    monkeypatch.setattr(bench_module, "profile_run", failing_profile)
    monkeypatch.setattr(models_module, "official_predictor", failing_compile)
    saved: list[dict] = []
    save_partial = bench_command._save_partial
    monkeypatch.setattr(
        bench_command,
        "_save_partial",
        lambda partial, *paths: (saved.append(json.loads(json.dumps(partial))), save_partial(partial, *paths)),
    )
    json_path = tmp_path / "b.json"
    arguments = [
        "bench",
        *TINY,
        "--frames",
        "9",
        "--retention",
        "0.3",
        "--profile-frames",
        "1",
        "--compile-mode",
        "default",
    ]
    assert main([*arguments, "--json", str(json_path)]) == 0
    sam2, _, vos = json.loads(json_path.read_text())["references"]
    assert sam2["error"] == "RuntimeError: CUPTI went away" and "ms_per_frame" in sam2 and not sam2.get("profile")
    assert vos["error"] == "RuntimeError: inductor failed" and "ms_per_frame" not in vos
    assert any(len(s["references"]) == 3 and s["references"][2].get("error") for s in saved)  # saved when it failed
    table = capsys.readouterr().out
    assert "sam2 SAM2VideoPredictor (eager): its profiled run failed (no profile figures): RuntimeError: CUPTI" in table


def test_a_compile_timeout_is_named_as_such_when_the_code_it_interrupts_raises_another_error(tmp_path, monkeypatch):
    """Inductor turns the time limit's TimeoutError inside its compile-worker wait into "future ...
    did not complete within Nones": the JSON named that, not --compile-timeout."""
    import sam2prune.models as models_module

    def interrupted_compile(baseline, *, vos_optimized=False, **kwargs):
        if vos_optimized:
            try:
                time.sleep(30)
            except TimeoutError as error:
                raise RuntimeError("compile-worker future did not complete within Nones") from error
        return official(baseline, vos_optimized=vos_optimized, **kwargs)

    official = models_module.official_predictor
    monkeypatch.setattr(models_module, "official_predictor", interrupted_compile)
    json_path = tmp_path / "b.json"
    arguments = ["bench", *TINY, "--frames", "9", "--retention", "0.3", "--profile-frames", "0"]
    assert main([*arguments, "--compile-mode", "default", "--compile-timeout", "1", "--json", str(json_path)]) == 0
    vos = json.loads(json_path.read_text())["references"][2]
    assert vos["error"].startswith(
        "TimeoutError: sam2 SAM2VideoPredictorVOS (torch.compile default): building, compiling, warming up and "
        "timing took more than 1 s (interrupted, it raised RuntimeError: compile-worker future did not complete"
    )
    with bench_module.time_limit(None, "anything") as limit:  # no limit: errors are what they are
        pass
    error = RuntimeError("x")
    assert not limit.expired and limit.cause(error) is error
    # the limit's own message inside another error (InductorError: TimeoutError: ...): said once
    limit = bench_module.TimeLimit("compiling took more than 20 s")
    limit.expired = True
    inductor = RuntimeError("TimeoutError: compiling took more than 20 s\n\nSet TORCHDYNAMO_VERBOSE=1 for more")
    assert str(limit.cause(inductor)) == "compiling took more than 20 s"
