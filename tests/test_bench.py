"""`sam2prune bench`: a short run produces the documented JSON, table and plot."""

from __future__ import annotations

import json

from PIL import Image

from sam2prune.cli import main

from conftest import TINY_SIZE

RUN_KEYS = {"ms_per_frame", "components_ms", "memory_bank_bytes_per_frame", "peak_rss_mib"}
COMPONENTS = {"image_encoder", "token_scoring", "memory_attention", "memory_encoder", "mask_decoder"}


def test_short_bench_writes_json_table_and_plot(tmp_path, capsys):
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(
        [
            "bench",
            "--image-size",
            str(TINY_SIZE),
            "--frames",
            "10",
            "--retention",
            "1.0",
            "0.3",
            "--threads",
            "2",
            "--json",
            str(json_path),
            "--plot",
            str(plot_path),
        ]
    )
    assert code == 0
    result = json.loads(json_path.read_text())
    assert set(result["baseline"]) >= RUN_KEYS and set(result["baseline"]["components_ms"]) == COMPONENTS
    assert [run["retention"] for run in result["pruned"]] == [1.0, 0.3]
    for run in result["pruned"]:
        assert RUN_KEYS | {"retention", "speedup"} <= set(run)
        assert run["speedup"] == result["baseline"]["ms_per_frame"] / run["ms_per_frame"] and len(run["frame_ms"]) == 10
    for key in ("versions", "threads", "device", "image_size"):
        assert key in result
    assert result["image_size"] == TINY_SIZE and result["threads"] == 2 and result["versions"]["sam2"] == "1.1.0"
    assert result["precision"] == "float32"
    assert result["warmup_frames"] == 3  # the CPU default
    full, pruned = result["pruned"]
    # retention 1.0 is the identity: exactly the dense bank, no indices; 0.3 about 30% of it
    assert full["memory_bank_bytes_per_frame"] == result["baseline"]["memory_bank_bytes_per_frame"]
    assert full["components_ms"]["token_scoring"] == 0.0
    assert 0.25 < pruned["memory_bank_bytes_per_frame"] / result["baseline"]["memory_bank_bytes_per_frame"] < 0.45
    assert pruned["kept_fraction"] == 20 / 64 and full["kept_fraction"] == 1.0
    assert result["baseline"]["components_ms"]["token_scoring"] == 0.0
    table = capsys.readouterr().out
    assert "| SAM 2 (unpruned) |" in table and "| pruned | 0.3 |" in table
    with Image.open(plot_path) as image:
        assert image.size[0] > 500


def test_bench_needs_frames_past_the_memory_bank(capsys):
    assert main(["bench", "--image-size", str(TINY_SIZE), "--frames", "8"]) == 2
    assert "steady state" in capsys.readouterr().err


def test_bf16_autocast_is_refused_on_the_cpu(capsys):
    assert main(["bench", "--image-size", str(TINY_SIZE), "--frames", "10", "--device", "cpu", "--bf16"]) == 2
    assert "--bf16 (bfloat16 autocast) is for CUDA devices" in capsys.readouterr().err
    assert main(["bench", "--image-size", str(TINY_SIZE), "--frames", "10", "--warmup", "0"]) == 2
    assert "--warmup must be >= 1 frame, got 0" in capsys.readouterr().err
