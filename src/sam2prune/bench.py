"""Speed and memory benchmark: the unpruned predictor and pruned ones, in one process, on the
same frames, with the same weights and the same click."""

from __future__ import annotations

import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sam2prune.config import PruningConfig
from sam2prune.data.video import VideoSource
from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write
from sam2prune.predictor import SAM2Predictor
from sam2prune.process_memory import peak_rss_mib, reset_peak_rss
from sam2prune.prompts import ObjectPrompt, apply_prompts

COMPONENTS = ("image_encoder", "token_scoring", "memory_attention", "memory_encoder", "mask_decoder")
SIGNAL_PARTS = ("visual", "text", "uncertainty", "prior", "fusion")
# SAM 2 attends to num_maskmem = 7 memory frames: from frame 7 on the bank is full; frames >= 8
# are steady state.
STEADY_FROM_FRAME = 8


@dataclass
class RunResult:
    """One predictor's figures. Times are medians over the steady-state frames."""

    ms_per_frame: float
    # image_encoder excludes the uncertainty probe's hooks, token_scoring includes them: it is
    # everything choosing the tokens costs; signals_ms breaks token_scoring down
    components_ms: dict[str, float]
    signals_ms: dict[str, float]
    memory_bank_bytes_per_frame: float  # mean over tracked (non-prompted) frames
    peak_rss_mib: float
    peak_rss_scope: str  # "run": reset before this run (Linux); "process": since process start
    peak_cuda_mib: float | None
    kept_fraction: float  # kept tokens / tokens, over tracked frames
    frame_ms: list[float] = field(default_factory=list)  # every frame, for inspection


@dataclass
class BenchSettings:
    model: str
    image_size: int
    frames: int
    threads: int
    device: str
    random_weights: bool
    pruning: list[PruningConfig]  # one pruned run each
    # frames each predictor tracks untimed first; None: 3 on the CPU, the whole clip on CUDA,
    # where cuDNN attention builds an execution plan for every new (queries, keys) shape and the
    # memory bank changes shape on every frame until it is full (see README, GPU figures)
    warmup_frames: int | None = None
    # run every predictor under torch.autocast(bfloat16), as SAM 2's own GPU examples do
    bf16_autocast: bool = False


def _tracked_stats(entries: list[dict], tokens_per_frame: int) -> tuple[float, float]:
    """(mean memory-bank bytes, kept fraction) over tracked, non-prompted frames, from each
    frame's ``frame_memory`` entries read as the frame was yielded (with bounded memory, the
    state after tracking no longer holds them)."""
    if not entries:
        return 0.0, 0.0
    bank = statistics.fmean(entry["memory_bank_bytes"] for entry in entries)
    kept = sum(entry["kept_tokens"] for entry in entries) / (tokens_per_frame * len(entries))
    return bank, kept


class ComponentTimer:
    """Wall-clock seconds spent per model component, per frame, measured by wrapping the
    predictor's methods from outside (``instrument``): the predictor does not know it is timed.

    Synchronises CUDA around every measurement when ``synchronize`` is set (biased on a GPU,
    where it serialises the launches; the headline figures come from the untimed frames).
    """

    def __init__(self, *, synchronize: bool = False) -> None:
        self.synchronize = synchronize
        self.seconds: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.seconds = defaultdict(float)

    @contextmanager
    def measure(self, component: str) -> Iterator[None]:
        if self.synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.synchronize:
                torch.cuda.synchronize()
            self.seconds[component] += time.perf_counter() - start

    def wrap(self, owner: object, method: str, component: str) -> None:
        """Time every call of ``owner.method`` as ``component`` (an instance attribute shadows
        the class's method; ``unwrap`` removes it)."""
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            with self.measure(component):
                return original(*args, **kwargs)

        setattr(owner, method, timed)


# (method of the predictor, component): where SAM 2 spends a frame
PREDICTOR_COMPONENTS = (
    ("forward_image", "image_encoder"),
    ("score_tokens", "token_scoring"),
    ("_prepare_memory_conditioned_features", "memory_attention"),
    ("_forward_sam_heads", "mask_decoder"),
    ("_encode_new_memory", "memory_encoder"),
)
ROUTER_SIGNALS = (("visual_signal", "visual"), ("text_signal", "text"), ("prior_signal", "prior"), ("fuse", "fusion"))


@contextmanager
def instrument(predictor: SAM2Predictor, timer: ComponentTimer) -> Iterator[ComponentTimer]:
    """Time the predictor's components (and the router's signals) while inside the block."""
    wrapped: list[tuple[object, str]] = []

    def wrap(owner: object, method: str, component: str) -> None:
        if hasattr(owner, method):
            timer.wrap(owner, method, component)
            wrapped.append((owner, method))

    for method, component in PREDICTOR_COMPONENTS:
        wrap(predictor, method, component)
    scorer = getattr(predictor, "scorer", None)
    for method, signal in ROUTER_SIGNALS:
        if scorer is not None:
            wrap(scorer, method, f"signal_{signal}")
    probe = getattr(predictor, "uncertainty_probe", None)
    if probe is not None:
        wrap(probe, "block_variance", "signal_uncertainty")
    try:
        yield timer
    finally:
        for owner, method in wrapped:
            delattr(owner, method)


def time_predictor(
    predictor: SAM2Predictor,
    source: VideoSource,
    prompts: list[ObjectPrompt],
    *,
    device: torch.device,
    on_prompted=None,
) -> RunResult:
    """Track the prompted objects through the clip once and measure every frame (the
    ``on_prompted`` hook, e.g. automatic texts, runs before and is not timed)."""
    synchronize = device.type == "cuda"
    timer = ComponentTimer(synchronize=synchronize)
    if synchronize:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_resettable = reset_peak_rss()
    with instrument(predictor, timer):
        inference_state = predictor.init_state(source)
        masks = apply_prompts(predictor, inference_state, prompts)
        if on_prompted is not None:
            on_prompted(predictor, inference_state, masks)
        frame_ms: list[float] = []
        per_frame_components: list[dict[str, float]] = []
        tracked: dict[tuple[int, int], dict] = {}
        timer.reset()
        frames = predictor.propagate_in_video(inference_state, start_frame_idx=0)
        while True:
            start = time.perf_counter()
            try:
                frame_idx, _, _ = next(frames)
            except StopIteration:
                break
            if synchronize:
                torch.cuda.synchronize()
            frame_ms.append((time.perf_counter() - start) * 1000)
            for obj_id, entry in predictor.frame_memory(inference_state, frame_idx).items():
                if not entry["conditioning"]:
                    tracked[(frame_idx, obj_id)] = entry
            measured = {k: v * 1000 for k, v in timer.seconds.items()}
            probe = measured.get("signal_uncertainty", 0.0)  # runs inside the image encoder
            measured["image_encoder"] = measured.get("image_encoder", 0.0) - probe
            measured["token_scoring"] = measured.get("token_scoring", 0.0) + probe
            per_frame_components.append(measured)
            timer.reset()
    # a warm-up run may be shorter than the steady state: its figures are not reported
    steady = list(range(STEADY_FROM_FRAME, len(frame_ms))) or list(range(1, len(frame_ms))) or [0]
    bank, kept = _tracked_stats(list(tracked.values()), predictor.num_tokens)
    return RunResult(
        ms_per_frame=statistics.median(frame_ms[i] for i in steady),
        components_ms={
            name: statistics.median(per_frame_components[i].get(name, 0.0) for i in steady) for name in COMPONENTS
        },
        signals_ms={
            name: statistics.median(per_frame_components[i].get(f"signal_{name}", 0.0) for i in steady)
            for name in SIGNAL_PARTS
        },
        memory_bank_bytes_per_frame=bank,
        peak_rss_mib=peak_rss_mib(),
        peak_rss_scope="run" if rss_resettable else "process",
        peak_cuda_mib=torch.cuda.max_memory_allocated() / 2**20 if synchronize else None,
        kept_fraction=kept,
        frame_ms=[round(ms, 2) for ms in frame_ms],
    )


def _versions() -> dict[str, str]:
    import sam2

    import sam2prune

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sam2": getattr(sam2, "__version__", "1.1.0"),
        "sam2prune": sam2prune.__version__,
    }
    try:
        from importlib.metadata import version

        versions["sam2"] = version("sam2")
    except Exception:  # metadata missing in odd installs: keep the fallback
        pass
    return versions


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    processor = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {processor} ({torch.get_num_threads()} threads)"


def run_benchmark(
    settings: BenchSettings,
    source: VideoSource,
    prompts: list[ObjectPrompt],
    *,
    build,
    progress=print,
    on_prompted_for=None,
) -> dict:
    """Benchmark the baseline and each pruning config. ``build(pruning)`` returns a predictor;
    all predictors must share weights. ``on_prompted_for(source)`` may give a hook for the
    pruned runs (automatic texts). Returns the JSON-able result."""
    torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    if settings.bf16_autocast and device.type != "cuda":
        raise InputError(f"--bf16 (bfloat16 autocast) is for CUDA devices; got --device {settings.device}")
    if len(source) <= STEADY_FROM_FRAME:
        raise InputError(
            f"--frames {len(source)}: need more than {STEADY_FROM_FRAME} frames to measure the steady state "
            f"(frames >= {STEADY_FROM_FRAME}, once SAM 2's 7-frame memory bank is full)"
        )
    warmup_frames = settings.warmup_frames
    if warmup_frames is None:
        warmup_frames = len(source) if device.type == "cuda" else 3
    if warmup_frames < 1:
        raise InputError(f"--warmup must be >= 1 frame, got {warmup_frames}")
    baseline = build(None)
    pruned = [(config, build(config)) for config in settings.pruning]
    # one autocast context around warm-up and timing: every predictor runs in the same precision
    with torch.autocast(device.type, dtype=torch.bfloat16) if settings.bf16_autocast else nullcontext():
        warmup = source.head(min(warmup_frames, len(source)))
        warm_prompts = [p for p in prompts if p.frame < len(warmup)]
        for predictor in [baseline] + [p for _, p in pruned]:
            hook = on_prompted_for(warmup) if on_prompted_for is not None and predictor is not baseline else None
            time_predictor(predictor, warmup, warm_prompts, device=device, on_prompted=hook)

        progress(f"timing unpruned SAM 2 on {len(source)} frames")
        base_result = time_predictor(baseline, source, prompts, device=device)
        results = []
        for config, predictor in pruned:
            label = f"retention {config.retention:g}" + (f", {config.mc_passes} MC passes" if _uses_mc(config) else "")
            progress(f"timing pruned SAM 2, {label}")
            hook = on_prompted_for(source) if on_prompted_for is not None else None
            result = time_predictor(predictor, source, prompts, device=device, on_prompted=hook)
            results.append(
                {
                    "retention": config.retention,
                    "mc_passes": config.mc_passes if _uses_mc(config) else None,
                    "speedup": base_result.ms_per_frame / result.ms_per_frame,
                    "pruning": asdict(config),
                    **asdict(result),
                }
            )
    return {
        "baseline": asdict(base_result),
        "pruned": results,
        "model": settings.model,
        "random_weights": settings.random_weights,
        "image_size": settings.image_size,
        "frames": len(source),
        "steady_from_frame": STEADY_FROM_FRAME,
        "threads": settings.threads,
        "warmup_frames": len(warmup),
        "device": _device_name(device),
        "precision": "bf16 autocast" if settings.bf16_autocast else "float32",
        "scorer": settings.pruning[0].scorer,
        "router": settings.pruning[0].router if settings.pruning[0].scorer == "router" else None,
        "signals": list(settings.pruning[0].active_signals()) if settings.pruning[0].scorer == "router" else None,
        "versions": _versions(),
    }


def _uses_mc(config: PruningConfig) -> bool:
    return config.scorer == "router" and config.uncertainty == "mc" and "uncertainty" in config.active_signals()


def markdown_table(result: dict) -> str:
    """The benchmark as a markdown table (times in ms per steady-state frame)."""
    header = (
        "| method | retention | ms/frame | speedup | image enc | scoring | mem attn | mem enc | mask dec "
        "| bank KiB/frame | bank ratio | peak RSS MiB |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    base = result["baseline"]

    def row(name: str, run: dict, retention: str, speedup: str) -> str:
        c = run["components_ms"]
        ratio = (
            run["memory_bank_bytes_per_frame"] / base["memory_bank_bytes_per_frame"]
            if base["memory_bank_bytes_per_frame"]
            else float("nan")
        )
        return (
            f"| {name} | {retention} | {run['ms_per_frame']:.0f} | {speedup} | {c['image_encoder']:.0f} "
            f"| {c['token_scoring']:.1f} | {c['memory_attention']:.0f} | {c['memory_encoder']:.0f} "
            f"| {c['mask_decoder']:.0f} | {run['memory_bank_bytes_per_frame'] / 1024:.0f} | {ratio:.3f} "
            f"| {run['peak_rss_mib']:.0f} |"
        )

    lines.append(row("SAM 2 (unpruned)", base, "-", "1.00x"))
    for run in result["pruned"]:
        name = "pruned" + (f", MC T={run['mc_passes']}" if run.get("mc_passes") else "")
        lines.append(row(name, run, f"{run['retention']:g}", f"{run['speedup']:.2f}x"))
    if any(any(run["signals_ms"].values()) for run in result["pruned"]):
        lines += ["", "Token scoring by signal (ms per frame; uncertainty runs inside the image encoder):", ""]
        lines += [
            "| retention | " + " | ".join(SIGNAL_PARTS) + " | total | % of image enc |",
            "|---|" + "---|" * (len(SIGNAL_PARTS) + 2),
        ]
        for run in result["pruned"]:
            parts = run["signals_ms"]
            label = f"{run['retention']:g}" + (f" (T={run['mc_passes']})" if run.get("mc_passes") else "")
            share = (
                100 * parts["uncertainty"] / run["components_ms"]["image_encoder"]
                if run["components_ms"]["image_encoder"]
                else 0
            )
            lines.append(
                f"| {label} | "
                + " | ".join(f"{parts[name]:.1f}" for name in SIGNAL_PARTS)
                + f" | {run['components_ms']['token_scoring']:.1f} | uncertainty {share:.1f}% |"
            )
    return "\n".join(lines)


def _pyplot():
    """matplotlib.pyplot, drawing off-screen.

    Raises:
        InputError: matplotlib is not installed (naming what to install).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise InputError(
            "--plot needs matplotlib: pip install 'sam2prune[plot]' (or pip install matplotlib)"
        ) from error
    return plt


def plot(path: Path, result: dict) -> None:
    """ms/frame and memory-bank size against retention (unpruned SAM 2 as a line)."""
    plt = _pyplot()
    runs = sorted(result["pruned"], key=lambda run: run["retention"])
    retentions = [run["retention"] for run in runs]
    base = result["baseline"]
    figure, (speed, bank) = plt.subplots(1, 2, figsize=(10, 4))
    speed.plot(retentions, [run["ms_per_frame"] for run in runs], "o-", label="pruned")
    speed.axhline(base["ms_per_frame"], color="grey", linestyle="--", label="SAM 2 (unpruned)")
    speed.set(xlabel="retention", ylabel="ms per frame (steady state)", ylim=(0, None))
    bank.plot(retentions, [run["memory_bank_bytes_per_frame"] / 1024 for run in runs], "o-", label="pruned")
    bank.axhline(base["memory_bank_bytes_per_frame"] / 1024, color="grey", linestyle="--", label="SAM 2 (unpruned)")
    bank.set(xlabel="retention", ylabel="memory bank KiB per tracked frame", ylim=(0, None))
    for axes in (speed, bank):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.suptitle(f"{result['model']} at {result['image_size']} px, {result['device']}")
    figure.tight_layout()
    try:
        atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    finally:
        plt.close(figure)
