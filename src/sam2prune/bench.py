"""Speed and memory benchmark: sam2's own predictors, this project's unpruned predictor and the
pruned predictors, in one process, on the same frames, with the same weights and prompts.

Every predictor ("method") is warmed up, then run separately for each kind of figure, so that no
measurement disturbs another:

- the headline run: nothing installed on the predictor (no wrapper, no profiler), one CUDA
  synchronisation per frame to time it. Its median over steady-state frames is ``ms_per_frame``
  and every speedup; it also gives the peak memory, the memory bank and the kept tokens.
- the components run: on the CPU, the predictor's methods wrapped by wall-clock timers
  (``instrument``). On CUDA, where timers would have to synchronise around every component, the
  same wrappers mark profiler ranges instead, and the profiled run gives them.
- the profiled run (``profile_frames`` steady frames, torch.profiler): kernels launched and GPU
  kernel time per frame, host operators per frame, and, on CUDA, each component's GPU kernel time
  (the kernels launched inside its range).

References, each a method of its own: sam2's ``SAM2VideoPredictor`` (eager; every ``speedup`` is
against it), sam2's ``SAM2VideoPredictorVOS`` (``vos_optimized=True``, torch.compile with a
lowered mode, CUDA by default) and sam2prune's ``SAM2Predictor`` (unpruned). A pruned run at
retention 1.0 separates what pruning gains (``speedup_vs_retention_1``) from what the rest of the
code costs or gains.
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sam2prune.config import PruningConfig
from sam2prune.data.video import VideoSource
from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write
from sam2prune.precision import bf16_autocast
from sam2prune.predictor.bank import SparseMemoryBank
from sam2prune.predictor.baseline import cuda_extension_available, init_state_from
from sam2prune.process_memory import peak_rss_mib, reset_peak_rss
from sam2prune.prompts import ObjectPrompt, apply_prompts
from sam2prune.wording import counted

if TYPE_CHECKING:
    from sam2.sam2_video_predictor import SAM2VideoPredictor
    from torch.autograd.profiler_util import FunctionEvent

# static_step: a steady frame's static step as a whole (--static-step); run as a CUDA graph its
# memory attention, mask decoder and memory encoder are not seen apart, run eagerly (buffers)
# they are also counted in their own columns
COMPONENTS = ("image_encoder", "token_scoring", "memory_attention", "memory_encoder", "mask_decoder", "static_step")
SIGNAL_PARTS = ("visual", "text", "uncertainty", "prior", "fusion")
# SAM 2 attends to num_maskmem = 7 memory frames: from frame 7 on the bank is full; frames >= 8
# are steady state (object pointers keep arriving until frame 16, one small token group each).
# With the static step, the steady state starts where the step replays (``steady_from_frame``).
STEADY_FROM_FRAME = 8
RANGE_PREFIX = "sam2prune.bench::"
HEADLINE = "median over steady-state frames of an uninstrumented run (no wrapper, no profiler; on a GPU, one CUDA sync per frame)"
COMPONENTS_WALL_CLOCK = "wall clock of the wrapped methods, in a separate run (median over steady-state frames)"
COMPONENTS_GPU = "GPU kernel time of the kernels launched inside each method (torch.profiler), in a separate run"
# what sam2 compiles its vos_optimized predictor with, and that predictor's class
SAM2_COMPILE_MODE = "max-autotune"
VOS_CLASS = "sam2.sam2_video_predictor.SAM2VideoPredictorVOS"
Hook = Callable[[Any, dict, dict], None]


@dataclass
class ProfileResult:
    """A profiled run's figures, per frame (means over the profiled steady-state frames).

    Attributes:
        frames: the profiled frame indices.
        kernels_per_frame: GPU kernels launched (memory copies and sets excluded); 0 on the CPU.
        kernel_ms_per_frame: their summed duration.
        graph_launches_per_frame: CUDA graph replays (``cudaGraphLaunch``). Their kernels are
            in the two figures above only as far as the profiler (CUPTI) reports kernels of
            graphs captured before it started: few kernels beside launches means it did not.
        memcpy_per_frame: GPU memory copies by kind (``HtoD``, ``DtoH``, ``DtoD``, ...).
        host_ops_per_frame: aten operators called on the host (nested ones included).
        copy_ops_per_frame: ``aten::copy_`` among them (dtype casts and device copies).
        runtime_calls_per_frame: the most frequent CUDA runtime/driver calls (launches, copies,
            synchronisations; one ``cudaDeviceSynchronize`` per frame is the benchmark's own).
        components_ms: per component, the GPU kernel time of what it launched (CUDA), or its
            host wall time under the profiler (CPU).
        signals_ms: the same for the router's signals.
        top_kernels: the kernels (or, on the CPU, operators) taking the most time:
            ``{"name", "per_frame", "ms_per_frame"}``.
    """

    frames: list[int]
    kernels_per_frame: float
    kernel_ms_per_frame: float
    graph_launches_per_frame: float
    memcpy_per_frame: dict[str, float]
    host_ops_per_frame: float
    copy_ops_per_frame: float
    runtime_calls_per_frame: dict[str, float]
    components_ms: dict[str, float]
    signals_ms: dict[str, float]
    top_kernels: list[dict[str, Any]]


@dataclass
class RunResult:
    """One method's figures. Times are milliseconds per steady-state frame."""

    ms_per_frame: float  # the headline run's median
    # image_encoder excludes the uncertainty probe's hooks, token_scoring includes them: it is
    # everything choosing the tokens costs; signals_ms breaks token_scoring down
    components_ms: dict[str, float]
    signals_ms: dict[str, float]
    components_source: str
    memory_bank_bytes_per_frame: float  # mean over tracked (non-prompted) frames
    peak_rss_mib: float
    peak_rss_scope: str  # "run": reset before the headline run (Linux); "process": since process start
    peak_cuda_mib: float | None  # max allocated during the headline run
    # max reserved by the caching allocator over the same run: with CUDA graphs, the memory a
    # graph's private pool holds for its replays counts here but not as allocated
    peak_cuda_reserved_mib: float | None
    kept_fraction: float  # kept tokens / tokens, over tracked frames
    objects_tracked: int
    warmup_s: float  # the warm-up's wall time (with torch.compile: the compilation)
    frame_ms: list[float] = field(default_factory=list)  # every frame of the headline run
    # frames of the headline run tracked as the static-shape step (--static-step; per group of
    # objects tracked together), and why capturing it as a CUDA graph failed where it did
    static_frames: int = 0
    static_capture_errors: list[str] = field(default_factory=list)
    profile: ProfileResult | None = None


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
    # steady-state frames profiled per method with torch.profiler; None: 5 on CUDA, 0 (no
    # profiled run) on the CPU
    profile_frames: int | None = None
    # torch.compile mode of sam2's vos_optimized predictor (sam2's own is "max-autotune", which
    # autotunes for many minutes); "none": not measured; None: "reduce-overhead" on CUDA, "none"
    # on the CPU
    compile_mode: str | None = None
    # seconds the vos_optimized predictor may take to be built, compiled, warmed up and timed
    # before it is given up (recorded as an error; the other methods' figures are kept); None: no limit
    compile_timeout_s: float | None = None
    # how the pruned predictors run steady-state frames (PrunedSAM2VideoPredictor.static_step):
    # "off" (sam2's step), "buffers" (the static-shape step, eager), "graphs" (as CUDA graphs)
    static_step: str = "off"


# --- instrumentation, from outside the predictor ---------------------------------------------------


class ComponentTimer:
    """Wall-clock seconds spent per model component, per frame, measured by wrapping the
    predictor's methods from outside (``instrument``): the predictor does not know it is timed.
    For the CPU: on a GPU it would have to synchronise around every component."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.seconds = defaultdict(float)

    @contextmanager
    def measure(self, component: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[component] += time.perf_counter() - start


class ProfilerRanges:
    """Marks each component's calls as a torch.profiler range (no synchronisation); the profiled
    run attributes kernels to components by them."""

    def measure(self, component: str) -> AbstractContextManager:
        return torch.profiler.record_function(RANGE_PREFIX + component)


# (method of the predictor, component): where SAM 2 spends a frame
PREDICTOR_COMPONENTS = (
    ("forward_image", "image_encoder"),
    ("score_tokens", "token_scoring"),
    ("_prepare_memory_conditioned_features", "memory_attention"),
    ("_forward_sam_heads", "mask_decoder"),
    ("_encode_new_memory", "memory_encoder"),
    ("_run_static_step", "static_step"),
)
ROUTER_SIGNALS = (("visual_signal", "visual"), ("text_signal", "text"), ("prior_signal", "prior"), ("fuse", "fusion"))


@contextmanager
def instrument(predictor: SAM2VideoPredictor, measurement: ComponentTimer | ProfilerRanges) -> Iterator[None]:
    """Measure the predictor's components (and the router's signals) while inside the block:
    each method is shadowed by an instance attribute calling it inside
    ``measurement.measure(component)``; leaving the block removes them."""
    wrapped: list[tuple[object, str]] = []

    def wrap(owner: object, method: str, component: str) -> None:
        if not hasattr(owner, method):
            return
        original = getattr(owner, method)

        def measured(*args, **kwargs):
            with measurement.measure(component):
                return original(*args, **kwargs)

        setattr(owner, method, measured)
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
        yield
    finally:
        for owner, method in wrapped:
            delattr(owner, method)


def _split_uncertainty(measured: dict[str, float]) -> dict[str, float]:
    """The uncertainty probe runs inside the image encoder: count it as token scoring."""
    measured = dict(measured)
    probe = measured.get("signal_uncertainty", 0.0)
    measured["image_encoder"] = measured.get("image_encoder", 0.0) - probe
    measured["token_scoring"] = measured.get("token_scoring", 0.0) + probe
    return measured


# --- one method's runs ---------------------------------------------------------------------------


@dataclass
class Method:
    """A predictor to measure and what the JSON says about it."""

    key: str  # "sam2", "sam2-vos", "sam2prune", "pruned"
    label: str
    predictor: Any  # None: built when its turn comes (sam2's compiled predictor)
    pruning: PruningConfig | None = None
    class_name: str | None = None  # of a predictor not built yet
    # gives, for a clip, what runs after the prompts, untimed (automatic texts)
    hook_for: Callable[[VideoSource], Hook] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def first_tracked_frame(prompts: list[ObjectPrompt]) -> int:
    """The frame tracking starts from: the first prompted one, as sam2 does by default (no object
    is tracked before it). The runs' lists of frames count from it."""
    return min(prompt.frame for prompt in prompts)


@contextmanager
def _session(method: Method, source: VideoSource, prompts: list[ObjectPrompt]) -> Iterator[tuple[dict, Iterator]]:
    """A fresh inference session with the prompts applied, and its frames to track."""
    predictor = method.predictor
    state = init_state_from(predictor, source)
    masks = apply_prompts(predictor, state, prompts)
    if method.hook_for is not None:
        method.hook_for(source)(predictor, state, masks)
    # from the first prompted frame, as sam2 does by default (no object is tracked before it)
    frames = predictor.propagate_in_video(state, start_frame_idx=first_tracked_frame(prompts))
    try:
        yield state, frames
    finally:
        frames.close()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _next_frame(frames: Iterator, device: torch.device) -> float | None:
    """Track one frame; its milliseconds (None at the end of the clip)."""
    start = time.perf_counter()
    try:
        next(frames)
    except StopIteration:
        return None
    _synchronize(device)
    return (time.perf_counter() - start) * 1000


def _steady(count: int, first: int) -> list[int]:
    # a warm-up run may be shorter than the steady state: its figures are not reported
    return list(range(first, count)) or list(range(1, count)) or [0]


def steady_from_frame(model: Any, static_step: str, frames: int, *, last_prompt: int = 0) -> int:
    """The first steady-state frame of a clip tracked forward from prompts on frames up to
    ``last_prompt``: ``STEADY_FROM_FRAME`` frames after it, or with the static step the first frame
    that replays it once the last prompted object is in its steady state (the frame after the
    step's first, which builds its buffers and captures its graph), for every method of the run."""
    if static_step == "off":
        return last_prompt + STEADY_FROM_FRAME
    from sam2prune.predictor.static_step import first_steady_frame

    return max(STEADY_FROM_FRAME, last_prompt + first_steady_frame(model, num_frames=frames) + 1)


@dataclass
class Headline:
    frame_ms: list[float]
    memory_bank_bytes_per_frame: float
    kept_fraction: float
    objects_tracked: int
    peak_rss_mib: float
    peak_rss_scope: str
    peak_cuda_mib: float | None
    peak_cuda_reserved_mib: float | None
    static_frames: int = 0
    static_capture_errors: list[str] = field(default_factory=list)


def warm_up(method: Method, source: VideoSource, prompts: list[ObjectPrompt], *, device: torch.device) -> float:
    """Track the clip once, untimed (compilation, cuDNN plans, allocator); its wall seconds."""
    start = time.perf_counter()
    with _session(method, source, prompts) as (_, frames):
        while _next_frame(frames, device) is not None:
            pass
    return time.perf_counter() - start


def headline_run(method: Method, source: VideoSource, prompts: list[ObjectPrompt], *, device: torch.device) -> Headline:
    """Track the clip with nothing installed on the predictor, one sync per frame (CUDA)."""
    _synchronize(device)
    if device.type == "cuda":  # the peaks start from what is live, not from what was cached before
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_resettable = reset_peak_rss()
    with _session(method, source, prompts) as (state, frames):
        frame_ms: list[float] = []
        entries: list[dict] = []  # what sam2prune's predictors stored per frame, read as it is yielded
        start = first_tracked_frame(prompts)
        while (ms := _next_frame(frames, device)) is not None:
            frame_ms.append(ms)
            if hasattr(method.predictor, "frame_memory"):  # not timed; frames are yielded in order
                entries += method.predictor.frame_memory(state, start + len(frame_ms) - 1).values()
        bank, kept = _tracked_stats(method.predictor, state, entries)
        objects = len(state["obj_ids"])
        steps = list(method.predictor.session(state).static_steps.steps.values()) if method.key == "pruned" else []
    # the image encoder's graphs live on the predictor (made in the warm-up run)
    runners = [step.runner for step in steps]
    runners += [encoder.runner for encoder in getattr(method.predictor, "static_encoders", {}).values()]
    return Headline(
        frame_ms=frame_ms,
        memory_bank_bytes_per_frame=bank,
        kept_fraction=kept,
        objects_tracked=objects,
        peak_rss_mib=peak_rss_mib(),
        peak_rss_scope="run" if rss_resettable else "process",
        peak_cuda_mib=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        peak_cuda_reserved_mib=torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None,
        static_frames=sum(step.replays for step in steps),
        static_capture_errors=[runner.capture_error for runner in runners if runner.capture_error],
    )


def components_run(
    method: Method, source: VideoSource, prompts: list[ObjectPrompt], *, device: torch.device, steady_from: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(components, signals): median wall-clock ms per steady-state frame of the wrapped methods."""
    timer = ComponentTimer()
    per_frame: list[dict[str, float]] = []
    with _session(method, source, prompts) as (_, frames), instrument(method.predictor, timer):
        timer.reset()
        while _next_frame(frames, device) is not None:
            per_frame.append(_split_uncertainty({k: v * 1000 for k, v in timer.seconds.items()}))
            timer.reset()
    steady = _steady(len(per_frame), steady_from)
    components = {name: statistics.median(per_frame[i].get(name, 0.0) for i in steady) for name in COMPONENTS}
    signals = {
        name: statistics.median(per_frame[i].get(f"signal_{name}", 0.0) for i in steady) for name in SIGNAL_PARTS
    }
    return components, signals


def profile_run(
    method: Method,
    source: VideoSource,
    prompts: list[ObjectPrompt],
    *,
    device: torch.device,
    frames: int,
    steady_from: int,
) -> ProfileResult:
    """torch.profiler over ``frames`` steady-state frames (from ``steady_from``, or the second
    tracked frame of a short clip), components marked as ranges; one sync per frame."""
    from torch.profiler import ProfilerActivity, profile

    start = first_tracked_frame(prompts)
    count = len(source) - start  # frames tracked
    first = steady_from if count > steady_from else 1
    profiled = list(range(first, min(first + frames, count)))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _session(method, source, prompts) as (_, tracked), instrument(method.predictor, ProfilerRanges()):
        for _ in range(first):
            _next_frame(tracked, device)
        with profile(activities=activities, record_shapes=False, with_stack=False) as profiler:
            for _ in profiled:
                _next_frame(tracked, device)
    return summarize_profile(profiler.events(), [start + i for i in profiled], on_gpu=device.type == "cuda")


def summarize_profile(events: Iterable[FunctionEvent], frames: list[int], *, on_gpu: bool) -> ProfileResult:
    """Per-frame figures of torch.profiler events (``profiler.events()``: ``FunctionEvent``s)
    recorded over ``frames``."""
    from torch.autograd import DeviceType

    count = max(len(frames), 1)
    kernels: Counter[str] = Counter()
    kernel_us: Counter[str] = Counter()
    memcpy: Counter[str] = Counter()
    runtime: Counter[str] = Counter()
    ranges: Counter[str] = Counter()
    host_ops = copy_ops = 0
    host_op_us: Counter[str] = Counter()
    for event in events:
        name = event.name
        if event.device_type == DeviceType.CUDA:
            if getattr(event, "is_user_annotation", False) or name.startswith(RANGE_PREFIX):
                continue  # the device-side copy of a range
            if name.startswith("Memcpy"):
                memcpy[name.split()[1] if len(name.split()) > 1 else name] += 1
            elif not name.startswith("Memset"):
                kernels[name] += 1
                kernel_us[name] += event.time_range.elapsed_us()
            continue
        if name.startswith(RANGE_PREFIX):
            component = name[len(RANGE_PREFIX) :]
            ranges[component] += event.device_time_total if on_gpu else event.cpu_time_total
        elif name.startswith("aten::"):
            host_ops += 1
            copy_ops += name == "aten::copy_"
            host_op_us[name] += event.self_cpu_time_total
        elif name.startswith(("cuda", "cu")) and not name.startswith("cudnn"):
            runtime[name] += 1
    ranged = _split_uncertainty({name: us / 1000 / count for name, us in ranges.items()})
    timed = kernel_us if on_gpu else host_op_us
    calls = kernels if on_gpu else Counter()
    top = [
        {"name": name[:120], "per_frame": calls[name] / count if on_gpu else None, "ms_per_frame": us / 1000 / count}
        for name, us in timed.most_common(10)
    ]
    return ProfileResult(
        frames=list(frames),
        kernels_per_frame=sum(kernels.values()) / count,
        kernel_ms_per_frame=sum(kernel_us.values()) / 1000 / count,
        graph_launches_per_frame=sum(n for name, n in runtime.items() if "GraphLaunch" in name) / count,
        memcpy_per_frame={kind: n / count for kind, n in sorted(memcpy.items())},
        host_ops_per_frame=host_ops / count,
        copy_ops_per_frame=copy_ops / count,
        runtime_calls_per_frame={name: n / count for name, n in runtime.most_common(8)},
        components_ms={name: ranged.get(name, 0.0) for name in COMPONENTS},
        signals_ms={name: ranged.get(f"signal_{name}", 0.0) for name in SIGNAL_PARTS},
        top_kernels=top,
    )


def _tracked_stats(predictor: SAM2VideoPredictor, inference_state: dict, entries: list[dict]) -> tuple[float, float]:
    """(mean memory-bank bytes, kept fraction) over tracked, non-prompted frames, of any
    predictor: sam2prune's from the ``frame_memory`` entries read as each frame was yielded
    (bounded memory drops them later), sam2's own from its state (it stores every frame dense)."""
    num_tokens = predictor.sam_image_embedding_size**2
    if hasattr(predictor, "frame_memory"):
        sizes = [(entry["memory_bank_bytes"], entry["kept_tokens"]) for entry in entries if not entry["conditioning"]]
    else:
        sizes = []
        for output_dict in inference_state["output_dict_per_obj"].values():
            bank = SparseMemoryBank(output_dict, num_tokens)
            sizes += [
                (bank.frame_bytes(out, None).attended, num_tokens)
                for _, conditioning, out, _ in bank.stored_frames()
                if not conditioning
            ]
    if not sizes:
        return 0.0, 0.0
    return statistics.fmean(size for size, _ in sizes), sum(kept for _, kept in sizes) / (num_tokens * len(sizes))


def measure_method(
    method: Method,
    source: VideoSource,
    prompts: list[ObjectPrompt],
    *,
    device: torch.device,
    warmup: VideoSource,
    steady_from: int,
    progress: Callable[[str], None],
) -> RunResult:
    """Warm-up, headline run and (CPU) components run of one method; the profiled run comes
    later (``add_profile``), after every method's headline run: a profiler's start-up and
    leftovers must not disturb them."""
    warm_prompts = [p for p in prompts if p.frame < len(warmup)]
    progress(f"{method.label}: warm-up on {len(warmup)} frames")
    warmup_s = warm_up(method, warmup, warm_prompts, device=device)
    progress(f"{method.label}: timing {len(source)} frames")
    headline = headline_run(method, source, prompts, device=device)
    if device.type == "cuda":
        components = dict.fromkeys(COMPONENTS, 0.0)
        signals = dict.fromkeys(SIGNAL_PARTS, 0.0)
        source_of_components = "not measured (no profiled run)"
    else:
        progress(f"{method.label}: timing its components")
        components, signals = components_run(method, source, prompts, device=device, steady_from=steady_from)
        source_of_components = COMPONENTS_WALL_CLOCK
    steady = _steady(len(headline.frame_ms), steady_from)
    return RunResult(
        ms_per_frame=statistics.median(headline.frame_ms[i] for i in steady),
        components_ms=components,
        signals_ms=signals,
        components_source=source_of_components,
        memory_bank_bytes_per_frame=headline.memory_bank_bytes_per_frame,
        peak_rss_mib=headline.peak_rss_mib,
        peak_rss_scope=headline.peak_rss_scope,
        peak_cuda_mib=headline.peak_cuda_mib,
        peak_cuda_reserved_mib=headline.peak_cuda_reserved_mib,
        kept_fraction=headline.kept_fraction,
        objects_tracked=headline.objects_tracked,
        warmup_s=warmup_s,
        frame_ms=[round(ms, 2) for ms in headline.frame_ms],
        static_frames=headline.static_frames,
        static_capture_errors=headline.static_capture_errors,
    )


def add_profile(run: dict[str, Any], profile: ProfileResult, *, device: torch.device) -> None:
    """Put a profiled run's figures into a method's JSON entry (on CUDA, its components too)."""
    run["profile"] = asdict(profile)
    if device.type == "cuda":
        run["components_ms"] = dict(profile.components_ms)
        run["signals_ms"] = dict(profile.signals_ms)
        run["components_source"] = COMPONENTS_GPU


# --- the benchmark -----------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    import sam2

    import sam2prune

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
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
    return f"CPU {processor} ({counted(torch.get_num_threads(), 'thread')})"


@dataclass
class TimeLimit:
    """A ``time_limit``'s state: whether it expired, and what its ``TimeoutError`` says."""

    message: str
    expired: bool = False

    def cause(self, error: Exception) -> Exception:
        """``error`` as the block's failure: the time limit's ``TimeoutError`` where the limit
        expired and the code interrupted raised another error instead (inductor turns it into
        "compile-worker future ... did not complete within Nones")."""
        if not self.expired or isinstance(error, TimeoutError):
            return error
        if self.message in str(error):  # the limit's own TimeoutError, wrapped (InductorError): said once
            return TimeoutError(self.message)
        return TimeoutError(f"{self.message} (interrupted, it raised {type(error).__name__}: {error})")


@contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[TimeLimit]:
    """Raise ``TimeoutError`` in the block once ``seconds`` have passed (SIGALRM: the main
    thread of a POSIX process; torch.compile's compilation is interrupted at its next Python
    step). An exception raised where Python ignores it (a weakref callback, ``__del__``) is lost,
    so it is raised again every second until the block is left. None: no limit."""
    import signal

    limit = TimeLimit(f"{what} took more than {seconds:g} s" if seconds else what)
    if not seconds:
        yield limit
        return

    def expire(signum, frame):
        limit.expired = True
        raise TimeoutError(limit.message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield limit
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _record_failure(method: Method, error: Exception, progress: Callable[[str], None]) -> None:
    progress(f"{method.label} failed: {type(error).__name__}: {error}")
    method.notes["error"] = f"{type(error).__name__}: {error}"
    method.notes["traceback"] = traceback.format_exc(limit=8)


def _may_fail(method: Method, settings: BenchSettings) -> bool:
    """Whether a failure of ``method`` is recorded with its reason (the other figures kept)
    instead of ending the benchmark: the compiled reference, and CUDA graphs of the static step,
    may fail where the eager predictors run."""
    return method.key == "sam2-vos" or (method.key == "pruned" and settings.static_step == "graphs")


def _uses_mc(config: PruningConfig) -> bool:
    return config.scorer == "router" and config.uncertainty == "mc" and "uncertainty" in config.active_signals()


def _prompt_summary(prompt: ObjectPrompt) -> dict[str, Any]:
    summary: dict[str, Any] = {"obj_id": prompt.obj_id, "frame": prompt.frame}
    if prompt.points:
        summary["points"] = [list(point) for point in prompt.points]
        summary["labels"] = list(prompt.labels)
    if prompt.box is not None:
        summary["box"] = list(prompt.box)
    if prompt.mask is not None:
        summary["mask_pixels"] = int(prompt.mask.sum())
    return summary


def run_benchmark(
    settings: BenchSettings,
    source: VideoSource,
    prompts: list[ObjectPrompt],
    *,
    build: Callable[[PruningConfig | None], SAM2VideoPredictor],
    progress: Callable[[str], None] = print,
    on_prompted_for: Callable[[VideoSource], Hook] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    clip_frames: int | None = None,
) -> dict:
    """Benchmark the references and each pruning config (see the module docstring).

    Args:
        build: ``build(pruning)`` returns a predictor (``None``: sam2prune's unpruned
            ``SAM2Predictor``, built by ``build_predictor``); all share its weights.
        on_prompted_for: ``on_prompted_for(clip)`` gives a hook run after the prompts of the
            pruned runs (automatic texts), untimed.
        checkpoint: called with the results so far after each method (e.g. to write the JSON,
            so that an interrupted run leaves what it measured).
        clip_frames: the length of the clip ``source`` was looped from, if it was.

    Returns:
        The JSON-able result.
    """
    from sam2prune.models import official_predictor

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
    profile_frames = settings.profile_frames
    if profile_frames is None:
        profile_frames = 5 if device.type == "cuda" else 0
    if profile_frames < 0:
        raise InputError(f"--profile-frames must be >= 0, got {profile_frames}")
    compile_mode = settings.compile_mode
    if compile_mode is None:
        compile_mode = "reduce-overhead" if device.type == "cuda" else "none"
    first_prompt = first_tracked_frame(prompts)
    late = sorted({p.obj_id for p in prompts} - {p.obj_id for p in prompts if p.frame == first_prompt})
    if late and not settings.bf16_autocast:
        which = f"objects {', '.join(map(str, late))} are" if len(late) > 1 else f"object {late[0]} is"
        raise InputError(
            f"{which} first prompted after frame {first_prompt}, where tracking "
            "starts: sam2's own SAM2VideoPredictor (the reference) tracks every object from there, and outside "
            "bfloat16 autocast it fails on an object's first frame before its prompt (its memory is stored in "
            "bfloat16, with no object pointer from the past to promote it); prompt every object on one frame, or "
            "run on CUDA with --bf16"
        )
    # the warm-up tracks its frames from the first prompted one
    warmup = source.head(min(first_prompt + warmup_frames, len(source)))

    baseline = build(None)
    last_prompt = max(prompt.frame for prompt in prompts)
    # frame numbers of the runs count from the first tracked frame
    tracked = len(source) - first_prompt
    steady_from = steady_from_frame(baseline, settings.static_step, tracked, last_prompt=last_prompt - first_prompt)
    if tracked <= steady_from:
        first = first_prompt + steady_from_frame(
            baseline, settings.static_step, 10**6, last_prompt=last_prompt - first_prompt
        )
        why = "once every memory window is full" + (
            f" after the last prompt, on frame {last_prompt}" if last_prompt else ""
        )
        if settings.static_step != "off":
            why = f"with --static-step, the first frame that replays the step {why}"
        raise InputError(
            f"--frames {len(source)}: the steady state starts at frame {first} ({why}): track {first + 1} frames "
            "or more"
        )
    compile_calls: list[dict] = []
    methods = [
        Method("sam2", "sam2 SAM2VideoPredictor (eager)", official_predictor(baseline)),
        Method("sam2prune", "sam2prune SAM2Predictor (unpruned)", baseline),
    ]
    for config in settings.pruning:
        label = f"pruned, retention {config.retention:g}" + (f", MC T={config.mc_passes}" if _uses_mc(config) else "")
        label += f", static step ({settings.static_step})" if settings.static_step != "off" else ""
        methods.append(Method("pruned", label, build(config), pruning=config, hook_for=on_prompted_for))
    vos_label = f"sam2 SAM2VideoPredictorVOS (torch.compile {compile_mode})"
    if compile_mode == "none":
        reason = (
            "not measured on the CPU (inductor compiles for minutes; pass --compile-mode to measure it)"
            if settings.compile_mode is None
            else "--compile-mode none"
        )
        vos = Method("sam2-vos", "sam2 SAM2VideoPredictorVOS", None, class_name=VOS_CLASS, notes={"skipped": reason})
    else:
        vos = Method(
            "sam2-vos",
            vos_label,
            None,
            class_name=VOS_CLASS,
            notes={
                "compile_mode": compile_mode,
                "sam2_compile_mode": SAM2_COMPILE_MODE,
                "compile_note": (
                    f"sam2 1.1.0 compiles its vos_optimized predictor with mode={SAM2_COMPILE_MODE!r}; here every "
                    f"torch.compile call made while it is built gets mode={compile_mode!r} instead "
                    "(sam2prune.models.torch_compile_mode), the rest of each call as sam2 makes it"
                ),
                "compile_calls": compile_calls,
            },
        )

    result: dict[str, Any] = {
        "references": [],
        "pruned": [],
        "reference": "sam2",
        "model": settings.model,
        "random_weights": settings.random_weights,
        "image_size": settings.image_size,
        "frames": len(source),
        "clip_frames": clip_frames or len(source),
        "first_tracked_frame": first_prompt,
        "steady_from_frame": first_prompt + steady_from,
        "threads": settings.threads,
        "warmup_frames": len(warmup),
        "profile_frames": profile_frames,
        "headline": HEADLINE,
        "components": COMPONENTS_GPU if device.type == "cuda" else COMPONENTS_WALL_CLOCK,
        "device": _device_name(device),
        "precision": "bf16 autocast" if settings.bf16_autocast else "float32",
        "objects": len({prompt.obj_id for prompt in prompts}),
        "prompts": [_prompt_summary(prompt) for prompt in prompts],
        "scorer": settings.pruning[0].scorer,
        "router": settings.pruning[0].router if settings.pruning[0].scorer == "router" else None,
        "signals": list(settings.pruning[0].active_signals()) if settings.pruning[0].scorer == "router" else None,
        "static_step": settings.static_step,
        "sam2_cuda_extension": cuda_extension_available(),
        "hole_filling": "on" if cuda_extension_available() else "off in every method (sam2._C is not installed)",
        "versions": _versions(),
    }

    def entry(method: Method, run: RunResult | None) -> dict[str, Any]:
        predictor_class = type(method.predictor) if method.predictor is not None else None
        data: dict[str, Any] = {
            "method": method.key,
            "label": method.label,
            "class": f"{predictor_class.__module__}.{predictor_class.__qualname__}"
            if predictor_class
            else method.class_name,
            **method.notes,
        }
        if method.pruning is not None:
            data.update(
                retention=method.pruning.retention,
                mc_passes=method.pruning.mc_passes if _uses_mc(method.pruning) else None,
                pruning=asdict(method.pruning),
            )
        if run is not None:
            data.update(asdict(run))
        return data

    def speedups() -> None:
        reference = next((m for m in result["references"] if m["method"] == "sam2" and "ms_per_frame" in m), None)
        full = [run for run in result["pruned"] if run["retention"] == 1.0]
        for run in result["references"] + result["pruned"]:
            if "ms_per_frame" not in run:
                continue
            if reference is not None:
                run["speedup"] = reference["ms_per_frame"] / run["ms_per_frame"]
            if run["method"] == "pruned":
                same = [f for f in full if f["mc_passes"] == run["mc_passes"]] or full
                run["speedup_vs_retention_1"] = same[0]["ms_per_frame"] / run["ms_per_frame"] if same else None
        if reference is not None:
            result["baseline"] = reference

    def measure(method: Method) -> dict[str, Any] | None:
        """Time one method (uninstrumented); its entry, or None when it was skipped or failed."""
        target = result["pruned"] if method.key == "pruned" else result["references"]
        if "skipped" in method.notes:
            target.append(entry(method, None))
            return None
        limit = settings.compile_timeout_s if method.key == "sam2-vos" else None
        timer: TimeLimit | None = None
        try:
            with time_limit(limit, f"{method.label}: building, compiling, warming up and timing") as timer:
                if method.predictor is None:  # sam2's vos_optimized predictor: built (and compiled) now
                    progress(f"building {method.label}")
                    method.predictor = official_predictor(
                        baseline, vos_optimized=True, compile_mode=compile_mode, compile_calls=compile_calls
                    )
                run = measure_method(
                    method, source, prompts, device=device, warmup=warmup, steady_from=steady_from, progress=progress
                )
        except Exception as error:
            if not _may_fail(method, settings):
                raise
            _record_failure(method, timer.cause(error) if timer is not None else error, progress)
            target.append(entry(method, None))
            if checkpoint is not None:  # the failure is on disk before the next method runs
                checkpoint(result)
            return None
        finally:  # its graphs' memory is not carried into the next method's figures
            if hasattr(method.predictor, "release_graphs"):
                method.predictor.release_graphs()
        target.append(entry(method, run))
        speedups()
        if checkpoint is not None:
            checkpoint(result)
        return target[-1]

    def profile(method: Method, data: dict[str, Any]) -> None:
        """Profile one measured method in a separate run; its figures join its entry."""
        progress(f"{method.label}: profiling {profile_frames} steady-state frames")
        try:
            add_profile(
                data,
                profile_run(method, source, prompts, device=device, frames=profile_frames, steady_from=steady_from),
                device=device,
            )
        except Exception as error:  # the profile is secondary: its method's timing is measured and saved
            _record_failure(method, error, progress)
            data.update(error=method.notes["error"], traceback=method.notes["traceback"])
        if checkpoint is not None:
            checkpoint(result)

    # one autocast context around every run: every method runs in the same precision. sam2's
    # compiled predictor comes last, after the others' profiles: its compilation may take
    # minutes or stall, and a time limit on the whole bench then costs no other figure
    with bf16_autocast(settings.bf16_autocast, device.type):
        measured = [(method, data) for method in methods if (data := measure(method)) is not None]
        for method, data in measured if profile_frames > 0 else ():
            profile(method, data)
        compiled = measure(vos)
        if compiled is not None and profile_frames > 0:
            profile(vos, compiled)
    speedups()
    return result


# --- presenting the results ---------------------------------------------------------------------


def _runs(result: dict) -> list[dict]:
    return [run for run in result["references"] + result["pruned"] if "ms_per_frame" in run]


def peak_memory(run: dict) -> str:
    """A run's peak CUDA memory allocated (and reserved) in MiB."""
    reserved = run.get("peak_cuda_reserved_mib")
    return f"{run['peak_cuda_mib']:.0f}" + ("" if reserved is None else f" ({reserved:.0f})")


def markdown_table(result: dict) -> str:
    """The benchmark as a markdown table (times in ms per steady-state frame)."""
    on_gpu = any(run.get("peak_cuda_mib") is not None for run in _runs(result))
    header = (
        "| method | retention | ms/frame | vs sam2 | vs r=1 | image enc | scoring | mem attn | mem enc | mask dec "
        "| static step "
        "| kernels/frame | kernel ms/frame | host ops/frame | bank KiB/frame/object | bank ratio | "
        + ("peak CUDA MiB (reserved) |" if on_gpu else "peak RSS MiB |")
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    reference = result.get("baseline")
    reference_bank = reference["memory_bank_bytes_per_frame"] if reference else 0.0

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    runs = _runs(result)
    # one precision for the table's times: a decimal where any row is under 100 ms
    digits = 1 if runs and min(run["ms_per_frame"] for run in runs) < 100 else 0
    for run in runs:
        c = run["components_ms"]
        profile = run.get("profile") or {}
        ratio = run["memory_bank_bytes_per_frame"] / reference_bank if reference_bank else None
        retention = f"{run['retention']:g}" if run["method"] == "pruned" else "-"
        vs_full = run.get("speedup_vs_retention_1")
        lines.append(
            f"| {run['label']} | {retention} | {run['ms_per_frame']:.{digits}f} "
            f"| {number(run.get('speedup'), 2)}x | {number(vs_full, 2) + 'x' if vs_full else '-'} "
            f"| {c['image_encoder']:.{digits}f} | {c['token_scoring']:.1f} | {c['memory_attention']:.{digits}f} "
            f"| {c['memory_encoder']:.{digits}f} | {c['mask_decoder']:.{digits}f} | {c['static_step']:.{digits}f} "
            f"| {number(profile.get('kernels_per_frame') or None, 0)} | {number(profile.get('kernel_ms_per_frame') or None, 1)} "
            f"| {number(profile.get('host_ops_per_frame'), 0)} "
            f"| {run['memory_bank_bytes_per_frame'] / 1024:.0f} | {number(ratio, 3)} "
            f"| {peak_memory(run) if on_gpu else format(run['peak_rss_mib'], '.0f')} |"
        )
    for run in result["references"] + result["pruned"]:
        if "ms_per_frame" not in run:
            why = run.get("skipped") or run.get("error")
            lines.append(f"\n{run['label']}: {'skipped' if 'skipped' in run else 'failed'}: {why}")
        elif run.get("error"):
            lines.append(f"\n{run['label']}: its profiled run failed (no profile figures): {run['error']}")
    pruned = [run for run in result["pruned"] if "ms_per_frame" in run]
    if any(any(run["signals_ms"].values()) for run in pruned):
        lines += ["", "Token scoring by signal (ms per frame; uncertainty runs inside the image encoder):", ""]
        lines += [
            "| retention | " + " | ".join(SIGNAL_PARTS) + " | total | % of image enc |",
            "|---|" + "---|" * (len(SIGNAL_PARTS) + 2),
        ]
        for run in pruned:
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
    lines += ["", f"ms/frame: {result['headline']}; components: {result['components']}."]
    return "\n".join(lines)


def plot(path: Path, result: dict) -> None:
    """ms/frame and memory-bank size against retention (the references as lines)."""
    from sam2prune.evaluation.report import pyplot

    plt = pyplot()
    runs = sorted((run for run in result["pruned"] if "ms_per_frame" in run), key=lambda run: run["retention"])
    retentions = [run["retention"] for run in runs]
    references = [run for run in result["references"] if "ms_per_frame" in run]
    figure, (speed, bank) = plt.subplots(1, 2, figsize=(10, 4))
    speed.plot(retentions, [run["ms_per_frame"] for run in runs], "o-", label="pruned")
    bank.plot(retentions, [run["memory_bank_bytes_per_frame"] / 1024 for run in runs], "o-", label="pruned")
    for reference, style in zip(references, ("--", ":", "-."), strict=False):
        speed.axhline(reference["ms_per_frame"], color="grey", linestyle=style, label=reference["label"])
    if result.get("baseline"):
        bank.axhline(
            result["baseline"]["memory_bank_bytes_per_frame"] / 1024, color="grey", linestyle="--", label="sam2"
        )
    speed.set(xlabel="retention", ylabel="ms per frame (steady state)", ylim=(0, None))
    bank.set(xlabel="retention", ylabel="memory bank KiB per tracked frame and object", ylim=(0, None))
    for axes in (speed, bank):
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"{result['model']} at {result['image_size']} px, {counted(result['objects'], 'object')}, {result['precision']}, "
        f"{result['device']}",
        fontsize=9,
    )
    figure.tight_layout()
    try:
        atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    finally:
        plt.close(figure)
