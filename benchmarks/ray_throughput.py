"""Throughput of `sam2prune eval` on Ray: sequences per minute with 1 worker x 2 threads and
2 workers x 1 thread (with --serial also one process without Ray, 2 threads), on the same
sequences: the repo's 6 chair frames copied under several names as a DAVIS set, SAM 2.1
hiera-tiny with random weights (seed 0), the protocol with --max-rounds refinement rounds (random
weights never reach the J&F threshold, so every sequence runs all of them).

Each run is a fresh `sam2prune eval` process into a fresh run folder, timed from start to exit:
the local Ray cluster's start, the workers' start and model builds are included, as a user
sees them. The configurations alternate within each repeat so that a change in the machine's
load hits them alike; the medians are reported.

    python benchmarks/ray_throughput.py --repeats 2 --json benchmarks/cpu-2cores_ray_throughput.json
    python benchmarks/ray_throughput.py --repeats 2 --omp-wait-policy PASSIVE \
        --json benchmarks/cpu-2cores_ray_throughput_omp-passive.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHAIR = REPO / "tests" / "data" / "chair"

# (name, extra eval arguments, environment)
ONE_BY_TWO = ("Ray, 1 worker x 2 threads", ["--workers", "1", "--threads-per-worker", "2"], {})
TWO_BY_ONE = ("Ray, 2 workers x 1 thread", ["--workers", "2", "--threads-per-worker", "1"], {})
SERIAL = ("serial, 2 threads (no Ray)", [], {"OMP_NUM_THREADS": "2"})


def davis_set(root: Path, count: int) -> list[str]:
    names = [f"chair{i}" for i in range(count)]
    for name in names:
        shutil.copytree(CHAIR / "JPEGImages", root / "JPEGImages" / "480p" / name)
        shutil.copytree(CHAIR / "Annotations", root / "Annotations" / "480p" / name)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return names


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-rounds", type=int, default=3, help="refinement rounds per sequence")
    parser.add_argument("--serial", action="store_true", help="also time one process without Ray, 2 threads")
    parser.add_argument(
        "--omp-wait-policy",
        choices=("PASSIVE", "ACTIVE"),
        help="OMP_WAIT_POLICY of every process (default: unset, OpenMP's own): on a machine whose cores "
        "other jobs share, threads that spin while they wait for each other slow a 2-thread process down",
    )
    args = parser.parse_args()
    configs = [ONE_BY_TWO, TWO_BY_ONE, *([SERIAL] if args.serial else [])]

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RAY_ADDRESS", None)  # a local cluster for every Ray run
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy  # Ray's workers inherit it
    runs = []
    with tempfile.TemporaryDirectory(prefix="ray-throughput-") as work:
        root = Path(work) / "DAVIS"
        davis_set(root, args.sequences)
        for repeat in range(args.repeats):
            for name, extra, config_env in configs:
                out = Path(work) / f"run-{repeat}-{len(runs)}"
                command = [
                    sys.executable,
                    "-m",
                    "sam2prune",
                    "eval",
                    "--dataset",
                    "davis",
                    "--root",
                    str(root),
                    "--out",
                    str(out),
                    "--image-size",
                    str(args.image_size),
                    "--random-weights",
                    "--max-rounds",
                    str(args.max_rounds),
                    *extra,
                ]
                load_before = os.getloadavg()
                start = time.perf_counter()
                completed = subprocess.run(command, env={**env, **config_env}, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if completed.returncode != 0:
                    print(completed.stderr, file=sys.stderr)
                    raise SystemExit(f"{name}: exit status {completed.returncode}")
                report = json.loads((out / "report.json").read_text())
                runs.append(
                    {
                        "config": name,
                        "repeat": repeat,
                        "wall_s": wall,
                        "sequences_per_min": args.sequences / wall * 60,
                        "j_and_f": report["overall"]["J&F-Mean"],
                        "load_average_1min_before": round(load_before[0], 2),
                        "command": " ".join(command[1:]).replace(str(root), "DAVIS").replace(str(out), "OUT"),
                    }
                )
                print(f"{name}: {wall:.1f} s, {runs[-1]['sequences_per_min']:.2f} sequences/min", flush=True)
                shutil.rmtree(out)

    summary = {}
    for name, _, _ in configs:
        walls = [r["wall_s"] for r in runs if r["config"] == name]
        summary[name] = {
            "median_wall_s": statistics.median(walls),
            "sequences_per_min": args.sequences / statistics.median(walls) * 60,
            "wall_s": walls,
        }
    one, two = summary[ONE_BY_TWO[0]], summary[TWO_BY_ONE[0]]
    result = {
        "benchmark": "sam2prune eval throughput on Ray, local cluster",
        "settings": {
            "sequences": args.sequences,
            "frames_per_sequence": len(list((CHAIR / "JPEGImages").iterdir())),
            "image_size": args.image_size,
            "model": "sam2.1_hiera_t, random weights (seed 0)",
            "max_rounds": args.max_rounds,
            "repeats": args.repeats,
            "OMP_WAIT_POLICY": args.omp_wait_policy,
        },
        "machine": {
            "cpu": cpu_model(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "note": "cores shared with other jobs: see each run's load average",
        },
        "versions": {package: version(package) for package in ("sam2prune", "torch", "sam2", "ray")},
        "runs": runs,
        "summary": summary,
        "speedup_2_workers_x_1_thread_over_1_worker_x_2_threads": two["sequences_per_min"] / one["sequences_per_min"],
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| configuration | median wall s | sequences/min |\n|---|---|---|")
    for name, values in summary.items():
        print(f"| {name} | {values['median_wall_s']:.1f} | {values['sequences_per_min']:.2f} |")
    print(
        f"\n2 workers x 1 thread / 1 worker x 2 threads: {result['speedup_2_workers_x_1_thread_over_1_worker_x_2_threads']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
