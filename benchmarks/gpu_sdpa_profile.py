"""Why memory attention under bf16 autocast is slow on a GPU: scaled_dot_product_attention
per backend on memory attention's shapes (1 head of 256 channels), the calls that each
predictor makes, and the benchmark with each backend forced.
    python benchmarks/gpu_sdpa_profile.py
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
ORIGINAL_SDPA = F.scaled_dot_product_attention


def timed(fn, repeats=10) -> float:
    fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def microbench() -> None:
    print("## SDPA alone, 1 head x 256 channels, ms per call")
    print("| dtype | n_q | n_k | default | " + " | ".join(BACKENDS) + " |")
    for dtype in (torch.float32, torch.bfloat16):
        for n_q, n_k in ((4096, 4096), (4096, 28736), (1229, 1229), (1229, 11470), (410, 6550)):
            q = torch.randn(1, 1, n_q, 256, device="cuda", dtype=dtype)
            k = torch.randn(1, 1, n_k, 256, device="cuda", dtype=dtype)
            v = torch.randn(1, 1, n_k, 256, device="cuda", dtype=dtype)
            cells = [f"{timed(lambda q=q, k=k, v=v: ORIGINAL_SDPA(q, k, v)):.2f}"]
            for backend in BACKENDS.values():
                try:
                    with sdpa_kernel(backend):
                        cells.append(f"{timed(lambda q=q, k=k, v=v: ORIGINAL_SDPA(q, k, v)):.2f}")
                except RuntimeError:
                    cells.append("n/a")
            print(f"| {str(dtype)[6:]} | {n_q} | {n_k} | " + " | ".join(cells) + " |")


def bench(retentions, *, backend=None, log_calls=False):
    from sam2prune.bench import BenchSettings, run_benchmark
    from sam2prune.cli import embedded_clip
    from sam2prune.config import PruningConfig
    from sam2prune.data.video import VideoSource
    from sam2prune.models import build_predictor, with_pruning
    from sam2prune.prompts import load_prompts_file

    calls = defaultdict(list)

    def sdpa(q, k, v, *args, **kwargs):
        context = sdpa_kernel(BACKENDS[backend]) if backend else nullcontext()
        if not log_calls:
            with context:
                return ORIGINAL_SDPA(q, k, v, *args, **kwargs)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with context:
            out = ORIGINAL_SDPA(q, k, v, *args, **kwargs)
        torch.cuda.synchronize()
        key = (
            tuple(q.shape),
            tuple(k.shape),
            str(q.dtype)[6:],
            str(k.dtype)[6:],
            str(v.dtype)[6:],
            q.is_contiguous(),
            k.is_contiguous(),
            v.is_contiguous(),
        )
        calls[key].append((time.perf_counter() - start) * 1000)
        return out

    F.scaled_dot_product_attention = sdpa
    try:
        torch.manual_seed(0)
        baseline = build_predictor("sam2.1_hiera_t", random_weights=True, device="cuda")
        source = VideoSource.open(embedded_clip()).head(12)
        prompt = load_prompts_file(embedded_clip() / "prompts.json")[:1]
        settings = BenchSettings(
            model="sam2.1_hiera_t",
            image_size=1024,
            frames=12,
            threads=16,
            device="cuda",
            random_weights=True,
            pruning=[PruningConfig(retention=r, scorer="prior") for r in retentions],
            bf16_autocast=True,
            compile_mode="none",  # sam2's compiled predictor is not what this script looks at
            profile_frames=0,
        )
        result = run_benchmark(
            settings,
            source,
            prompt,
            build=lambda p: baseline if p is None else with_pruning(baseline, p),
            progress=lambda *_: None,
        )
    finally:
        F.scaled_dot_product_attention = ORIGINAL_SDPA
    runs = [("sam2", result["baseline"])] + [(f"r={run['retention']:g}", run) for run in result["pruned"]]
    print(
        f"backend {backend or 'default'}: "
        + ", ".join(
            f"{name} {run['ms_per_frame']:.1f} ms/frame (mem attn {run['components_ms']['memory_attention']:.1f})"
            for name, run in runs
        )
    )
    if log_calls:
        print("| q | k | dtypes q,k,v | contiguous q,k,v | calls | median ms |")
        for key, times in sorted(calls.items(), key=lambda item: -statistics.median(item[1]) * len(item[1]))[:16]:
            print(
                f"| {key[0]} | {key[1]} | {key[2]},{key[3]},{key[4]} | {key[5]},{key[6]},{key[7]} | {len(times)} | {statistics.median(times):.2f} |"
            )


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name())
    microbench()
    print("\n## bf16 autocast, every SDPA call timed (all predictors of one bench run together)")
    bench([1.0, 0.3], log_calls=True)
    print("\n## bf16 autocast benchmark (12 frames) with each backend forced for every SDPA call")
    for backend in (None, *BACKENDS):
        try:
            bench([1.0, 0.3], backend=backend)
        except RuntimeError as error:
            print(f"backend {backend}: failed: {str(error).splitlines()[0][:200]}")
