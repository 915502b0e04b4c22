"""Memory against video length (``sam2prune bench --lengths``): peak RSS (and peak CUDA memory)
and steady-state ms per frame of official SAM 2 and of the pruned predictor with and without
bounded memory, on a real clip looped to each length.

Each (method, length) runs in a fresh process (``python -m sam2prune.memory_bench RUN_JSON``):
a process's peak RSS never goes down, so measuring one after another in the same process would
report the largest so far. All methods load the same weights file (the checkpoint, or random
weights drawn once and saved), so they run the same model.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.errors import InputError

if TYPE_CHECKING:
    from sam2prune.data.video import VideoSource

METHODS = ("sam2", "sam2-offload", "pruned-unbounded", "pruned-bounded")
METHOD_HELP = {
    "sam2": "official sam2.sam2_video_predictor.SAM2VideoPredictor, default settings",
    "sam2-offload": "official, init_state(offload_video_to_cpu=True, offload_state_to_cpu=True)",
    "pruned-unbounded": "the pruned predictor, init_state(bounded_memory=False): every frame's outputs kept",
    "pruned-bounded": "the pruned predictor, init_state(bounded_memory=True), the default",
}
# frames >= 8 are steady state (the 7-frame memory bank is full), as in bench
STEADY_FROM_FRAME = 8


@dataclass(frozen=True)
class LengthRun:
    """What one measuring process runs (passed to it as JSON).

    Attributes:
        method: one of ``METHODS``.
        frames: the video's length.
        video: a folder of frames named by their index (what sam2's own loader reads).
        model: the model name or YAML.
        checkpoint: the weights every method loads.
        image_size: the model's input size; None: the model's.
        device: torch device.
        threads: torch CPU threads.
        pruning: the pruned methods' ``PruningConfig`` as a dict.
        point: the click ``(x, y)`` on frame 0 (one object).
        bf16: run under bfloat16 autocast (CUDA).
    """

    method: str
    frames: int
    video: str
    model: str
    checkpoint: str
    image_size: int | None
    device: str
    threads: int
    pruning: dict
    point: tuple[float, float]
    bf16: bool = False


@dataclass
class LengthResult:
    """One (method, length) measurement.

    Attributes:
        peak_rss_mib: the process's peak resident memory from ``init_state`` to the last frame
            (the model already loaded; reset before ``init_state`` where Linux allows).
        peak_cuda_mib: peak CUDA memory allocated over the same span, on a GPU; else None.
        ms_per_frame: median over frames >= 8 of the wall time per tracked frame.
        init_seconds: ``init_state`` (sam2 reads every frame there; sam2prune none).
        error: why the run failed (e.g. out of memory), with the other figures None.
    """

    method: str
    frames: int
    peak_rss_mib: float | None = None
    peak_cuda_mib: float | None = None
    ms_per_frame: float | None = None
    init_seconds: float | None = None
    peak_rss_scope: str | None = None
    error: str | None = None
    frame_ms: list[float] = field(default_factory=list)


def measure(run: LengthRun) -> LengthResult:
    """Build the method's predictor, then track one object through the video once, measuring
    (runs in the measuring process)."""
    import torch

    from sam2prune.config import PruningConfig
    from sam2prune.models import build_official_predictor, build_predictor
    from sam2prune.precision import bf16_autocast
    from sam2prune.process_memory import peak_rss_mib, reset_peak_rss

    torch.set_num_threads(run.threads)
    device = torch.device(run.device)
    official = run.method.startswith("sam2")
    if official:
        predictor = build_official_predictor(
            run.model, checkpoint=run.checkpoint, device=run.device, image_size=run.image_size
        )
    else:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in run.pruning.items()}
        pruning = PruningConfig(**fields)
        predictor = build_predictor(
            run.model, checkpoint=run.checkpoint, device=run.device, image_size=run.image_size, pruning=pruning
        )
    cuda = device.type == "cuda"
    with bf16_autocast(run.bf16, device), torch.inference_mode():
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        resettable = reset_peak_rss()
        start = time.perf_counter()
        if official:
            offload = run.method == "sam2-offload"
            state = predictor.init_state(run.video, offload_video_to_cpu=offload, offload_state_to_cpu=offload)
        else:
            state = predictor.init_state(run.video, bounded_memory=run.method == "pruned-bounded")
        init_seconds = time.perf_counter() - start
        predictor.add_new_points_or_box(state, 0, 1, points=[list(run.point)], labels=[1])
        frame_ms = []
        frames = predictor.propagate_in_video(state, start_frame_idx=0)
        while True:
            start = time.perf_counter()
            try:
                next(frames)
            except StopIteration:
                break
            if cuda:
                torch.cuda.synchronize(device)
            frame_ms.append((time.perf_counter() - start) * 1000)
    steady = frame_ms[STEADY_FROM_FRAME:] or frame_ms
    return LengthResult(
        method=run.method,
        frames=run.frames,
        peak_rss_mib=peak_rss_mib(),
        peak_cuda_mib=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        ms_per_frame=statistics.median(steady),
        init_seconds=init_seconds,
        peak_rss_scope="run" if resettable else "process",
        frame_ms=[round(ms, 2) for ms in frame_ms],
    )


def check_loopable(source: VideoSource) -> None:
    """Raises InputError unless ``source`` is a folder of JPEG frames (``looped_folder``)."""
    if source.is_video_file or any(path.suffix.lower() not in (".jpg", ".jpeg") for path in source.frame_files):
        raise InputError(
            f"--lengths loops a folder of JPEG frames (official SAM 2 reads those); {source.path} is not one"
        )


def looped_folder(clip: Path, frames: int, folder: Path) -> Path:
    """``folder`` filled with ``frames`` links named ``00000.jpg``... to the clip's frames in a
    loop (sam2's own loader reads JPEG folders named by frame index).

    Raises:
        InputError: the clip is not a folder of JPEG frames.
    """
    from sam2prune.data.video import VideoSource

    source = VideoSource.open(clip)
    check_loopable(source)
    folder.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(source.looped(frames).frame_files):
        (folder / f"{index:05d}.jpg").symlink_to(path.resolve())
    return folder


def run_in_fresh_process(run: LengthRun) -> LengthResult:
    """``measure(run)`` in a new Python process (the one sam2prune runs in)."""
    import sam2prune

    env = dict(os.environ)
    package_root = str(Path(sam2prune.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "sam2prune.memory_bench", json.dumps(asdict(run))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return LengthResult(
            method=run.method, frames=run.frames, error=last[-1] if last else f"exit status {done.returncode}"
        )
    return LengthResult(**json.loads(lines[-1]))


def run_lengths(
    *,
    lengths: Sequence[int],
    methods: Sequence[str],
    clip: Path,
    model: str,
    checkpoint: Path | None,
    image_size: int | None,
    device: str,
    threads: int,
    pruning: dict,
    point: tuple[float, float],
    bf16: bool = False,
    progress: Callable[[str], None] = print,
    on_result: Callable[[list[LengthResult]], None] | None = None,
) -> list[LengthResult]:
    """Every method at every length, each in a fresh process: method by method in the order
    given, each at the lengths in the order given (so that what matters most can come first in a
    long run); ``on_result(results so far)`` after each.

    Raises:
        InputError: a length < 9 (no steady-state frame) or an unknown method.
    """
    if not lengths or min(lengths) <= STEADY_FROM_FRAME:
        short = ", ".join(str(n) for n in lengths if n <= STEADY_FROM_FRAME) or "none given"
        raise InputError(
            f"--lengths: each length must be > {STEADY_FROM_FRAME} frames (the steady state starts there), got {short}"
        )
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"--methods: expected some of {', '.join(METHODS)}, got {', '.join(unknown) or 'none'}")
    results = []
    with tempfile.TemporaryDirectory(prefix="sam2prune-lengths-") as temp:
        weights = checkpoint
        if weights is None:  # random weights, drawn once: every method loads the same file
            import torch

            from sam2prune.cli.common import RANDOM_WEIGHTS_SEED
            from sam2prune.models import build_predictor

            model_weights = build_predictor(model, random_weights=True, seed=RANDOM_WEIGHTS_SEED, image_size=image_size)
            weights = Path(temp) / "random_weights.pt"
            torch.save({"model": model_weights.state_dict()}, weights)
            del model_weights
        folders = {}
        for method in methods:
            for frames in dict.fromkeys(lengths):
                if frames not in folders:
                    folders[frames] = looped_folder(clip, frames, Path(temp) / f"frames_{frames}")
                folder = folders[frames]
                progress(f"{method}: {frames} frames")
                run = LengthRun(
                    method=method,
                    frames=frames,
                    video=str(folder),
                    model=model,
                    checkpoint=str(weights),
                    image_size=image_size,
                    device=device,
                    threads=threads,
                    pruning=pruning,
                    point=point,
                    bf16=bf16,
                )
                result = run_in_fresh_process(run)
                if result.error:
                    progress(f"{method} at {frames} frames failed: {result.error}")
                else:
                    progress(
                        f"{method} at {frames} frames: peak RSS {result.peak_rss_mib:.0f} MiB, "
                        f"{result.ms_per_frame:.1f} ms/frame"
                    )
                results.append(result)
                if on_result is not None:
                    on_result(results)
    return results


def markdown_table(results: Sequence[LengthResult]) -> str:
    """The results by length, then method."""
    results = sorted(results, key=lambda r: (r.frames, METHODS.index(r.method)))
    lines = [
        "| method | frames | peak RSS MiB | peak CUDA MiB | ms/frame | init_state s |",
        "|---|---|---|---|---|---|",
    ]

    def number(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for result in results:
        if result.error:
            lines.append(f"| {result.method} | {result.frames} | failed: {result.error} | | | |")
            continue
        lines.append(
            f"| {result.method} | {result.frames} | {number(result.peak_rss_mib)} | {number(result.peak_cuda_mib)} "
            f"| {number(result.ms_per_frame, 1)} | {number(result.init_seconds, 1)} |"
        )
    return "\n".join(lines)


def plot(path: Path, results: Sequence[LengthResult], *, title: str) -> None:
    """Peak RSS (and peak CUDA memory, on a GPU) against the number of frames, per method."""
    from sam2prune.evaluation.report import pyplot
    from sam2prune.fsutil import atomic_write

    plt = pyplot()
    cuda = any(result.peak_cuda_mib is not None for result in results)
    figure, axes = plt.subplots(1, 2 if cuda else 1, figsize=(11 if cuda else 6, 4), squeeze=False)
    panels = [("peak_rss_mib", "peak RSS (MiB)")] + ([("peak_cuda_mib", "peak CUDA memory (MiB)")] if cuda else [])
    from matplotlib.ticker import MaxNLocator

    for axis, (key, label) in zip(axes[0], panels, strict=True):
        highest = 0.0
        for number, method in enumerate(METHODS):  # a method has the same colour in every plot
            points = [
                (r.frames, getattr(r, key)) for r in results if r.method == method and getattr(r, key) is not None
            ]
            if points:
                axis.plot(*zip(*points, strict=True), "o-", color=f"C{number}", label=method)
                highest = max(highest, *(value for _, value in points))
        axis.set(xlabel="frames", ylabel=label, ylim=(0, highest * 1.1 or None))  # the top line off the frame
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(textwrap.fill(title, 60 if not cuda else 110), fontsize="medium")
    figure.tight_layout()
    try:
        atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    finally:
        plt.close(figure)


if __name__ == "__main__":
    run = LengthRun(**json.loads(sys.argv[1]))
    print(json.dumps(asdict(measure(run))))
