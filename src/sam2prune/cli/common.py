"""What the commands share: the option groups (model, token pruning, router, automatic text,
data, interactive protocol), their conversion into typed arguments, the weights a command
runs with, building the predictor, and the refusal of options that would have no effect.

Every flag backed by a dataclass field (``PruningConfig``, ``ProtocolConfig``, ``ModelOptions``,
``AutoTextOptions``) has the field's name and the parser default None (not given): the default
lives in the dataclass only and is quoted from it in the help, and an option given where it
has no effect can be refused."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.config import (
    FILL_MODES,
    ROUTER_ONLY_FIELDS,
    ROUTERS,
    SCORERS,
    SIGNALS,
    UNCERTAINTY_MODES,
    ProtocolConfig,
    PruningConfig,
    RayConfig,
    ineffective_fields,
)
from sam2prune.errors import InputError
from sam2prune.wording import no_effect

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence as DatasetSequence
    from sam2prune.data.video import VideoSource
    from sam2prune.predictor import SAM2Predictor
    from sam2prune.prompts import ObjectPrompt
    from sam2prune.text.auto import AutoTextPipeline

log = logging.getLogger("sam2prune")

DEFAULT_MODEL = "sam2.1_hiera_t"
DEFAULT_MAX_WORDS = 6  # text.auto.DEFAULT_MAX_WORDS, without importing torch for --help
RANDOM_WEIGHTS_SEED = 0
# bench and sweep measure several retentions by default; everything else defaults to the dataclass
RETENTION_GRID = (1.0, 0.5, 0.3, 0.1)


def embedded_clip() -> Path:
    """The short real clip shipped with the package (24 frames of SAM 2's ``bedroom`` demo)."""
    return Path(str(resources.files("sam2prune") / "assets" / "bedroom"))


@dataclass(frozen=True)
class Command:
    """One subcommand of the console script.

    Attributes:
        run: the plain typed function that does the work, callable from Python.
        add_arguments: adds the command's options to its parser.
        handle: converts the parsed options into ``run``'s arguments and calls it; returns the
            exit status.
        help: the one line of ``sam2prune --help``.
        description: the first paragraphs of ``sam2prune COMMAND --help``.
        examples: command lines that end its ``--help``.
        epilog: text between the options and the examples.
    """

    run: Callable[..., object]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[argparse.Namespace], int]
    help: str
    description: str
    examples: tuple[str, ...]
    epilog: str = ""


def examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def default_of(function: Callable[..., object], parameter: str) -> Any:
    """The default of a command function's parameter, for its flag: the value is written once,
    in the function's signature."""
    return inspect.signature(function).parameters[parameter].default


def default_text(config: object, name: str) -> str:
    """A dataclass default as the help quotes it (tuples comma-separated, as the flag reads them)."""
    value = getattr(config, name)
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def given_fields(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among ``names`` that the user set on the command line (``None``: not given)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


# --- argument types ----------------------------------------------------------------------------


def at_most_one(values: list[Any], option: str) -> Any:
    """The value of an option given at most once (argparse ``append``, so that a repeat is an
    error rather than silently the last one); None when not given.

    Raises:
        InputError: the option was repeated.
    """
    if len(values) > 1:
        raise InputError(
            f"{option} was given {len(values)} times: one per run (for several objects or frames, use segment --prompts)"
        )
    return values[0] if values else None


def path_argument(text: str) -> Path:
    """A path option's value; an empty one (an unset shell variable, say) is refused, not read as
    the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def signal_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in SIGNALS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(SIGNALS)}, got {text!r}")
    return names


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def frame_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame index (integer >= 0), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a frame index (integer >= 0), got {value}")
    return value


def object_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an object id in 1..254, got {text!r}") from None
    if not 1 <= value <= 254:
        raise argparse.ArgumentTypeError(f"expected an object id in 1..254, got {value}")
    return value


# --- model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOptions:
    """Which SAM 2 a command builds.

    Attributes:
        model: an official model name (``sam2prune models``) or a SAM 2 YAML config.
        checkpoint: its official checkpoint; None: ``./checkpoints/<official file name>`` if
            it is there, else random weights where ``random_weights`` allows them.
        random_weights: build the architecture with random weights (masks are meaningless,
            timings are real).
        image_size: model input size in pixels, a multiple of 32; None: the model's.
        device: a torch device, or ``auto`` (cuda if available, else cpu).
    """

    model: str = DEFAULT_MODEL
    checkpoint: Path | None = None
    random_weights: bool = False
    image_size: int | None = None
    device: str = "auto"


MODEL_FIELDS = tuple(f.name for f in fields(ModelOptions))


def model_inputs(model: ModelOptions) -> list[tuple[str, Path]]:
    """``(option, path)`` of the files a model's options name (for output checks)."""
    inputs = [("--checkpoint", model.checkpoint)] if model.checkpoint is not None else []
    return inputs + ([("--model", Path(model.model))] if Path(model.model).suffix in (".yaml", ".yml") else [])


def option_error(what: str, error: Exception, *, flags: dict[str, str] | None = None) -> InputError:
    """A config's error about a field (``"refine_below must be ..."``) as the user gave it: the
    option's name (``--refine-below must be ...``; ``flags`` names the options of fields that
    have another name); other errors prefixed with ``what``."""
    message = str(error)
    field_name = message.split(" ", 1)[0]
    if " must " in message and field_name.isidentifier() and field_name.islower():
        flag = (flags or {}).get(field_name, "--" + field_name.replace("_", "-"))
        return InputError(flag + message[len(field_name) :])
    return InputError(f"{what}: {message}")


def add_overwrite_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


_MODEL_DEFAULTS = ModelOptions()


def add_threads_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: torch's, i.e. the cores; on a machine busy with other work, the free ones)",
    )


def check_threads(threads: int | None) -> None:
    """Raises InputError unless ``threads`` (``--threads``) is None (not given) or >= 1."""
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` while the block runs (None: left as they are),
    with a warning when they are more than the usable cores (``main`` applies ``--threads``
    so, once per run).

    Raises:
        InputError: ``threads`` < 1.
    """
    check_threads(threads)
    if threads is None:
        yield
        return
    from sam2prune.process_memory import usable_cores

    cores = usable_cores()
    if threads > cores:
        log.warning(
            "--threads %d is more than the %d CPU cores this process may use: threads that wait for a core slow "
            "every step",
            threads,
            cores,
        )
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def add_model_options(parser: argparse.ArgumentParser, *, results: bool = True, threads: bool = True) -> None:
    """Args:
    threads: also ``--threads`` (``main`` applies it; bench records it, and adds it itself)."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        help="sam2.1_hiera_{t,s,b+,l}, sam2_hiera_{t,s,b+,l} or a SAM 2 YAML config "
        f"(default: {default_text(_MODEL_DEFAULTS, 'model')})",
    )
    if results:
        where = (
            "official SAM 2 checkpoint (.pt) for --model (default: ./checkpoints/<official file name> if it is "
            "there; `sam2prune models` lists the names); without one the command refuses to run unless "
            "--random-weights is given"
        )
    else:
        where = (
            "official SAM 2 checkpoint (.pt) for --model (default: ./checkpoints/<official file name> if it is there, "
            "else random weights, which time the same)"
        )
    group.add_argument("--checkpoint", type=path_argument, metavar="FILE.pt", help=where)
    group.add_argument(
        "--random-weights",
        action="store_true",
        default=None,
        help="build the real architecture with random weights (masks are meaningless, timings are real)",
    )
    group.add_argument(
        "--image-size",
        type=int,
        metavar="PIXELS",
        help="model input size in pixels, a multiple of 32 (default: the model's, 1024)",
    )
    group.add_argument(
        "--device",
        help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N "
        f"(default: {default_text(_MODEL_DEFAULTS, 'device')})",
    )
    if threads:
        add_threads_option(group)


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The model options given, checked before anything is built or read."""
    from sam2prune.models import check_image_size

    check_image_size(getattr(args, "image_size", None), name="--image-size")
    return ModelOptions(**given_fields(args, MODEL_FIELDS))


@dataclass(frozen=True)
class Weights:
    """Which weights a command builds its model with."""

    checkpoint: Path | None  # None: random weights
    found_locally: bool = False  # taken from ./checkpoints/ without --checkpoint


def resolve_weights(model: ModelOptions, *, required: bool) -> Weights:
    """Resolve the model options to a checkpoint or random weights, before anything heavy.

    ``required``: the command produces results (masks, scores, aligners, routers) that are
    meaningless with random weights, so it refuses to run without a checkpoint unless
    ``--random-weights`` is given. A benchmark only times, so random weights are its default.

    Raises:
        InputError, CheckpointError: unknown model, both options, or no checkpoint found.
    """
    from sam2prune.errors import CheckpointError
    from sam2prune.models import find_local_checkpoint, missing_checkpoint_message, resolve_config

    resolve_config(model.model)  # unknown model names fail before anything heavy happens
    if model.checkpoint is not None and model.random_weights:
        raise InputError("--checkpoint and --random-weights exclude each other")
    if model.checkpoint is not None:
        if model.checkpoint.is_dir():
            raise CheckpointError(f"--checkpoint {model.checkpoint} is a folder; expected a checkpoint file (.pt)")
        if not model.checkpoint.is_file():
            raise CheckpointError(f"--checkpoint {model.checkpoint} does not exist")
        return Weights(model.checkpoint)
    if model.random_weights:
        return Weights(None)
    local = find_local_checkpoint(model.model)
    if local is not None:
        return Weights(local, found_locally=True)
    if required:
        raise CheckpointError(missing_checkpoint_message(model.model, cli=True))
    return Weights(None)


def resolve_device(name: str) -> str:
    """``--device``: auto (cuda if available, else cpu) or a device this machine has.

    Raises:
        InputError: naming the option and what was expected.
    """
    import torch

    from sam2prune.models import resolve_device as checked_device

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        checked_device(name)
    except InputError as error:
        raise InputError(f"--{error}") from None
    return name


def say_weights(model: ModelOptions, weights: Weights) -> None:
    """Log which weights a run uses (random ones as a warning)."""
    if weights.checkpoint is None:
        log.warning(
            "running %s with RANDOM weights, seed %d (masks are not meaningful; timings are)",
            model.model,
            RANDOM_WEIGHTS_SEED,
        )
    else:
        found = " (found in ./checkpoints/)" if weights.found_locally else ""
        log.info("loading checkpoint %s%s", weights.checkpoint, found)


def build(model: ModelOptions, weights: Weights, pruning: PruningConfig | None = None) -> SAM2Predictor:
    """Build the predictor the model options ask for, saying which weights it runs with."""
    from sam2prune.models import build_predictor

    say_weights(model, weights)
    device = resolve_device(model.device)
    log.debug(
        "model %s, image size %s, device %s, pruning %s", model.model, model.image_size or "default", device, pruning
    )
    return build_predictor(
        model.model,
        checkpoint=weights.checkpoint,
        random_weights=weights.checkpoint is None,
        # the same random model in every command, so that e.g. an aligner fit on it fits it again
        seed=RANDOM_WEIGHTS_SEED,
        device=device,
        image_size=model.image_size,
        pruning=pruning,
    )


# --- memory over the video ----------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryOptions:
    """How a tracking session holds memory over the video.

    Attributes:
        unbounded_memory: keep every tracked frame's memories, pointers and masks for the whole
            video, as sam2 does (to compare); by default only what later frames can read is
            kept (``SAM2Predictor.init_state(bounded_memory=True)``), with the same masks.
    """

    unbounded_memory: bool = False


MEMORY_FIELDS = tuple(f.name for f in fields(MemoryOptions))


def add_memory_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("memory")
    group.add_argument(
        "--unbounded-memory",
        action="store_true",
        default=None,
        help="keep every frame's memories, pointers and masks for the whole video, as sam2 does (default: keep "
        "only what later frames can read; the masks are the same, memory does not grow with the video)",
    )


def memory_options(args: argparse.Namespace) -> MemoryOptions:
    return MemoryOptions(**given_fields(args, MEMORY_FIELDS))


# --- running on a GPU ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuOptions:
    """How tracking runs on a GPU.

    Attributes:
        bf16: under bfloat16 autocast, as SAM 2's GPU examples do (CUDA only); else float32.
        static_step: how the pruned predictor runs steady-state frames
            (``PrunedSAM2VideoPredictor.set_static_step``): ``graphs`` replays them as CUDA
            graphs (CUDA only), ``buffers`` runs the same static step eagerly, ``off`` sam2's step.
    """

    bf16: bool = False
    static_step: str = "off"


GPU_FIELDS = tuple(f.name for f in fields(GpuOptions))


def add_gpu_options(parser: argparse.ArgumentParser, *, subject: str = "tracking") -> None:
    group = parser.add_argument_group("GPU")
    group.add_argument(
        "--bf16",
        action="store_true",
        default=None,
        help=f"run {subject} under bfloat16 autocast, as SAM 2's GPU examples do (CUDA only; default: float32)",
    )
    group.add_argument(
        "--static-step",
        choices=("off", "buffers", "graphs"),
        default=None,
        help="the pruned predictor runs steady-state frames as a static-shape step on preallocated buffers: "
        "graphs replays it as CUDA graphs (CUDA only), buffers runs it eagerly; off: sam2's step "
        f"(default: {GpuOptions.static_step})",
    )


def gpu_options(args: argparse.Namespace) -> GpuOptions:
    return GpuOptions(**given_fields(args, GPU_FIELDS))


def check_gpu_options(gpu: GpuOptions, device: str, *, pruned: bool = True) -> None:
    """Raises InputError: an option the device cannot run, or ``--static-step`` where no
    predictor is pruned."""
    import torch

    from sam2prune.predictor.static_step import check_mode

    if not pruned and gpu.static_step != "off":
        raise InputError(
            "--static-step runs the pruned predictor's steady-state frames: it has no effect with --method sam2"
        )
    if gpu.bf16 and not device.startswith("cuda"):
        raise InputError(f"--bf16 (bfloat16 autocast) is for CUDA devices; this run is on {device}")
    try:
        check_mode(gpu.static_step, torch.device(device))
    except ValueError as error:
        raise InputError(f"--static-step: {error}") from None


# --- token pruning and the router ----------------------------------------------------------------

PRUNING_FIELDS = tuple(f.name for f in fields(PruningConfig))
PRUNING_DEFAULTS = PruningConfig()


def add_pruning_options(
    parser: argparse.ArgumentParser, *, retention_list: bool = False, multi_mc: bool = False
) -> None:
    """Flags mapping one to one onto PruningConfig fields (``--auto-text`` is among the
    automatic text options). An option given in a mode where it has no effect can be refused
    (``pruning_configs``)."""
    group = parser.add_argument_group("token pruning")
    if retention_list:
        group.add_argument(
            "--retention",
            type=float,
            nargs="+",
            metavar="R",
            help=f"retentions to measure, each in (0, 1] (default: {' '.join(map(str, RETENTION_GRID))})",
        )
    else:
        group.add_argument(
            "--retention",
            type=float,
            metavar="R",
            help=f"fraction of tokens kept per frame, in (0, 1] (default: {default_text(PRUNING_DEFAULTS, 'retention')})",
        )
    group.add_argument(
        "--scorer",
        choices=SCORERS,
        help="token ranking: router = fusion of --signals; prior = previous mask (dilated) alone; uniform = "
        f"regular grid; random (default: {default_text(PRUNING_DEFAULTS, 'scorer')})",
    )
    group.add_argument(
        "--prune-conditioning-frames",
        action="store_true",
        default=None,
        help="also prune the memory of prompted frames (default: kept dense)",
    )
    group.add_argument(
        "--fill",
        choices=FILL_MODES,
        help="dropped positions after memory attention: norm = LayerNorm(x + 0.1 pos), raw = encoder features "
        f"(default: {default_text(PRUNING_DEFAULTS, 'fill')})",
    )
    group.add_argument(
        "--prior-dilation",
        type=int,
        metavar="TOKENS",
        help="dilation of the previous mask in tokens, for the prior scorer and the router's prior signal "
        f"(default: {default_text(PRUNING_DEFAULTS, 'prior_dilation')})",
    )
    group.add_argument(
        "--seed",
        type=int,
        help="seed of the random scorer, of Monte-Carlo dropout masks and of an untrained MLP router "
        f"(default: {default_text(PRUNING_DEFAULTS, 'seed')})",
    )
    router = parser.add_argument_group("router (with --scorer router)")
    router.add_argument(
        "--router",
        choices=ROUTERS,
        help="default = weighted sum of the normalised signals (no training); paper = the source paper's MLP; "
        f"learned = MLP over all signals; paper/learned load --router-weights (default: {default_text(PRUNING_DEFAULTS, 'router')})",
    )
    router.add_argument(
        "--router-weights", metavar="FILE", help="weights of the paper/learned router (sam2prune train-router)"
    )
    router.add_argument(
        "--signals",
        type=signal_list,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(SIGNALS)} (default: all available; text with --text)",
    )
    router.add_argument("--text", help="description of the target, for the text signal (needs --aligner)")
    router.add_argument("--aligner", metavar="FILE", help="token-to-text projection (sam2prune fit-aligner)")
    if multi_mc:
        router.add_argument(
            "--mc-passes",
            type=int,
            nargs="+",
            metavar="T",
            help="dropout samples T for --uncertainty mc; several values are each measured "
            f"(default: {default_text(PRUNING_DEFAULTS, 'mc_passes')})",
        )
    else:
        router.add_argument(
            "--mc-passes",
            type=int,
            metavar="T",
            help=f"dropout samples T for --uncertainty mc (default: {default_text(PRUNING_DEFAULTS, 'mc_passes')})",
        )
    router.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_MODES,
        help="analytic = closed-form dropout variance in one pass; mc = sampled "
        f"(default: {default_text(PRUNING_DEFAULTS, 'uncertainty')})",
    )
    router.add_argument(
        "--mc-dropout-p",
        type=float,
        metavar="P",
        help=f"dropout rate of the uncertainty signal (default: {default_text(PRUNING_DEFAULTS, 'mc_dropout_p')})",
    )
    router.add_argument(
        "--uncertainty-blocks",
        type=int_list,
        metavar="LIST",
        help=f"Hiera blocks with dropout, comma-separated (default: {default_text(PRUNING_DEFAULTS, 'uncertainty_blocks')})",
    )
    router.add_argument(
        "--signal-weights",
        type=float_list,
        metavar="P,T,U,V",
        help="weights of prior, text, uncertainty, visual in the default router "
        f"(default: {default_text(PRUNING_DEFAULTS, 'signal_weights')})",
    )


def _given_pruning_options(args: argparse.Namespace) -> dict[str, Any]:
    """The PruningConfig fields the user set on the command line."""
    return given_fields(args, PRUNING_FIELDS)


def refuse_pruning_options_for_sam2(args: argparse.Namespace) -> None:
    """With ``--method sam2`` nothing is pruned: every pruning option would be silently ignored."""
    given = [option(name) for name in _given_pruning_options(args)]
    given += [option(name) for name in AUTO_TEXT_FIELDS if getattr(args, name, None) is not None]
    if given:
        raise InputError(f"{no_effect(given)} with --method sam2 (unpruned)")


def build_pruning_configs(
    args: argparse.Namespace,
    *,
    retentions: list[float] | None = None,
    mc_passes: list[int | None] | None = None,
    variant: dict[str, object] | None = None,
) -> list[PruningConfig]:
    """The PruningConfig of each (mc_passes, retention) combination: the options given on the
    command line, then ``variant`` (fields a sweep varies), over the dataclass defaults.

    Raises:
        InputError: an invalid value.
    """
    given = {
        name: value for name, value in _given_pruning_options(args).items() if name not in ("retention", "mc_passes")
    }
    given.update(variant or {})
    if retentions is None:
        retention = getattr(args, "retention", None)
        retentions = (
            retention
            if isinstance(retention, list)
            else [retention if retention is not None else PRUNING_DEFAULTS.retention]
        )
    if mc_passes is None:
        passes = getattr(args, "mc_passes", None)
        mc_passes = passes if isinstance(passes, list) else [passes]
    configs = []
    try:
        for passes in mc_passes:
            for retention in retentions:
                extra = {"mc_passes": passes} if passes is not None else {}
                configs.append(PruningConfig(retention=retention, **{**given, **extra}))
    except (TypeError, ValueError) as error:
        # a sweep's varied fields come from its plural options
        plural = {"text": "--texts", "signals": "--signal-sets", "scorer": "--scorers"}
        raise option_error(
            "pruning options", error, flags={k: plural[k] for k in variant or {} if k in plural}
        ) from error
    return configs


def refuse_ineffective_options(
    args: argparse.Namespace, configs: list[PruningConfig], *, varied: frozenset[str] | set[str] = frozenset()
) -> None:
    """Refuse an option given on the command line that has no effect in any of ``configs``
    (e.g. ``--router`` with ``--scorer prior``): silently ignoring it would mislead."""
    explicit = [name for name in _given_pruning_options(args) if name != "retention" and name not in varied]
    unused = set(explicit)
    for config in configs:
        unused &= set(ineffective_fields(config, explicit))
    if unused:
        names = [name for name in explicit if name in unused]
        reason = _why_ineffective(configs[0], names[0])
        raise InputError(
            f"{no_effect([option(n) for n in names])} here ({reason}); remove {'it' if len(names) == 1 else 'them'}"
        )


def pruning_configs(args: argparse.Namespace, *, retentions: list[float] | None = None) -> list[PruningConfig]:
    """``build_pruning_configs`` checked by ``refuse_ineffective_options``."""
    configs = build_pruning_configs(args, retentions=retentions)
    refuse_ineffective_options(args, configs)
    return configs


def _why_ineffective(config: PruningConfig, name: str) -> str:
    if config.scorer != "router" and name in ROUTER_ONLY_FIELDS:
        return f"{option(name)} is for --scorer router, and the scorer is {config.scorer}"
    if name in ("text", "aligner", "auto_text"):
        if config.signals is None:  # the default signals: text only with a text
            return "the router has a text signal only with --text or --auto-text"
        return "the text signal is not among the router's --signals"
    if name in ("uncertainty", "mc_dropout_p", "uncertainty_blocks"):
        return "the uncertainty signal is not among the router's --signals"
    if name == "mc_passes":
        return "Monte-Carlo passes are drawn with --uncertainty mc only"
    if name == "router_weights":
        return "the default router has no weights; --router-weights is for --router paper or learned"
    if name == "signal_weights":
        return "--signal-weights weigh the default router's signals"
    if name == "prior_dilation":
        return "no prior is used: the scorer is not prior and the router has no prior signal"
    if name == "seed":
        return "nothing random is drawn: the seed is for --scorer random, --uncertainty mc or an untrained MLP router"
    return "not used in this mode"


# --- automatic text prompt -------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoTextOptions:
    """How objects are described when ``PruningConfig.auto_text`` is on (region -> caption -> phrase).

    Attributes:
        captioner: image-to-text model, a transformers folder or hub id; required.
        refiner: caption -> phrase: None or ``minilm`` (the best caption span) or a
            seq2seq/causal language model folder or hub id.
        max_words: words in the phrase at most.
        caption_prompt: what the captioner is asked; None: an object-centric description request.
        cache_dir: cache of generated phrases; None: ``~/.cache/sam2prune/auto_text``.
    """

    captioner: str | None = None
    refiner: str | None = None
    max_words: int = DEFAULT_MAX_WORDS
    caption_prompt: str | None = None
    cache_dir: Path | None = None


AUTO_TEXT_FIELDS = tuple(f.name for f in fields(AutoTextOptions))
_AUTO_TEXT_DEFAULTS = AutoTextOptions()


def add_auto_text_options(parser: argparse.ArgumentParser, *, switch: bool = True) -> None:
    group = parser.add_argument_group("automatic text prompt (region -> caption -> phrase)")
    if switch:
        group.add_argument(
            "--auto-text",
            action="store_true",
            default=None,
            help="describe each prompted object with --captioner and use the phrase for the text signal (needs --aligner)",
        )
    group.add_argument(
        "--captioner",
        metavar="MODEL",
        help="image-to-text model: a transformers folder or hub id (BLIP, BLIP-2, LLaVA, Florence-2, ...)",
    )
    group.add_argument(
        "--refiner",
        metavar="MODEL",
        help="caption -> phrase: parse (default: the subject noun phrase, from spaCy's dependency parse; needs the "
        "text extra), span (the caption span closest to the caption in MiniLM embedding) or a seq2seq/causal LM "
        "folder or hub id",
    )
    group.add_argument(
        "--max-words",
        type=int,
        metavar="N",
        help=f"words in the phrase at most (default: {default_text(_AUTO_TEXT_DEFAULTS, 'max_words')})",
    )
    group.add_argument(
        "--caption-prompt",
        metavar="TEXT",
        help="what the captioner is asked (default: an object-centric description request)",
    )
    group.add_argument(
        "--cache-dir",
        type=path_argument,
        metavar="DIR",
        help="cache of generated phrases (default: ~/.cache/sam2prune/auto_text)",
    )


def auto_text_options(args: argparse.Namespace) -> AutoTextOptions:
    return AutoTextOptions(**given_fields(args, AUTO_TEXT_FIELDS))


def refuse_auto_text_options_without_switch(args: argparse.Namespace) -> None:
    given = [option(name) for name in AUTO_TEXT_FIELDS if getattr(args, name, None) is not None]
    if given and not getattr(args, "auto_text", False):
        raise InputError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} used by --auto-text only; add --auto-text or remove {'it' if len(given) == 1 else 'them'}"
        )


def auto_text_pipeline(options: AutoTextOptions, *, device: str, command: str) -> AutoTextPipeline:
    from sam2prune.text.auto import DEFAULT_CAPTION_PROMPT, AutoTextPipeline

    if not options.captioner:
        needs = "--auto-text needs" if command != "prompt" else "`prompt` needs"
        raise InputError(f"{needs} --captioner MODEL (an image-to-text model folder or hub id)")
    return AutoTextPipeline(
        options.captioner,
        refiner=options.refiner,
        max_words=options.max_words,
        caption_prompt=options.caption_prompt or DEFAULT_CAPTION_PROMPT,
        device=resolve_device(device),
        cache_dir=options.cache_dir,
    )


def auto_text_hook(pipeline: AutoTextPipeline, source: VideoSource, prompts: list[ObjectPrompt]) -> Callable[..., None]:
    """``on_prompted`` callback that describes each object and sets its text on the session."""
    from sam2prune.text.auto import describe_objects

    def hook(predictor, inference_state, masks):
        for obj_id, result in describe_objects(pipeline, source, prompts, masks).items():
            predictor.set_object_text(inference_state, obj_id, result.phrase)
            seconds = ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items())
            log.info(
                "object %d: %r (caption %r, region %s from %s%s; %s)",
                obj_id,
                result.phrase,
                result.caption,
                result.box,
                result.roi_source,
                ", cached" if result.cached else "",
                seconds,
            )

    return hook


# --- data and the interactive protocol --------------------------------------------------------------


@dataclass(frozen=True)
class DataSelection:
    """The sequences a command runs on.

    Attributes:
        dataset: the dataset's layout (``sam2prune.data.datasets.DATASETS``).
        root: the dataset's root folder.
        split: set/split; None: the dataset's validation set.
        sequences: only these sequences; None: all of the split.
        limit: only the first N sequences.
    """

    dataset: str
    root: Path
    split: str | None = None
    sequences: tuple[str, ...] | None = None
    limit: int | None = None


def layouts_text() -> str:
    """The dataset layouts --dataset names, for a command's help."""
    import textwrap

    from sam2prune.data.datasets import LAYOUTS

    lines = ["dataset layouts (ROOT is --root, <set> is --split):"]
    for name, layout in LAYOUTS.items():
        lines += textwrap.wrap(f"{name}: {layout}", width=100, initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)


def add_data_options(parser: argparse.ArgumentParser, *, default_dataset: str | None = None) -> None:
    """--dataset (required unless it has a default), --root, --split, --sequences, --limit."""
    from sam2prune.data.datasets import DATASETS

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        required=default_dataset is None,
        default=default_dataset,
        help="dataset layout (each is described at the end of `sam2prune eval --help`, above its examples)"
        + (" (default: %(default)s)" if default_dataset else ""),
    )
    data.add_argument("--root", type=path_argument, required=True, metavar="ROOT", help="the dataset's root folder")
    data.add_argument("--split", help="set/split (default: the dataset's validation set: val, or valid for LVOS)")
    data.add_argument(
        "--sequences", nargs="+", action="extend", metavar="NAME", help="only these sequences (repeatable)"
    )
    data.add_argument("--limit", type=int, metavar="N", help="only the first N sequences")


def unique_names(names: Sequence[str] | None, *, option: str = "--sequences") -> tuple[str, ...] | None:
    """``names`` each once, in order (a name given twice, often a typo for another, is said)."""
    if not names:
        return None
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        log.warning("%s: %s named more than once (each runs once)", option, ", ".join(repeated))
    return tuple(dict.fromkeys(names))


def data_selection(args: argparse.Namespace) -> DataSelection:
    return DataSelection(
        dataset=args.dataset,
        root=args.root,
        split=args.split,
        sequences=unique_names(args.sequences),
        limit=args.limit,
    )


def select_sequences(data: DataSelection) -> list[DatasetSequence]:
    from sam2prune.data.datasets import read_dataset

    if data.limit is not None and data.limit < 1:
        raise InputError(f"--limit must be >= 1, got {data.limit}")
    # the sequences are opened as they are read: --limit opens only the first N
    sequences = list(
        itertools.islice(read_dataset(data.dataset, data.root, data.split, only=data.sequences), data.limit)
    )
    if data.sequences:
        known = {s.name for s in sequences}
        unknown = [name for name in data.sequences if name not in known]
        if unknown and (data.limit is None or len(sequences) < data.limit):
            raise InputError(f"--sequences: {', '.join(unknown)} not in the {data.dataset} set")
        if unknown:
            log.warning("--limit %d reached first: %s not looked for", data.limit, ", ".join(unknown))
    if not sequences:
        raise InputError(f"no sequence to evaluate in {data.root}")
    return sequences


PROTOCOL_FIELDS = tuple(f.name for f in fields(ProtocolConfig))
_PROTOCOL_DEFAULTS = ProtocolConfig()


def add_protocol_options(parser: argparse.ArgumentParser) -> None:
    protocol = parser.add_argument_group("interactive protocol")
    protocol.add_argument(
        "--refine-below",
        type=float,
        metavar="J&F",
        help=f"refine frames whose J&F (a fraction) is below this (default: {default_text(_PROTOCOL_DEFAULTS, 'refine_below')})",
    )
    protocol.add_argument(
        "--clicks-per-round",
        type=int,
        metavar="N",
        help=f"corrective clicks per round (default: {default_text(_PROTOCOL_DEFAULTS, 'clicks_per_round')})",
    )
    protocol.add_argument(
        "--max-rounds",
        type=int,
        metavar="N",
        help=f"refinement rounds per sequence at most (default: {default_text(_PROTOCOL_DEFAULTS, 'max_rounds')})",
    )


def protocol_config(args: argparse.Namespace) -> ProtocolConfig:
    try:
        return ProtocolConfig(**given_fields(args, PROTOCOL_FIELDS))
    except ValueError as error:
        raise option_error("protocol options", error) from error


# --- Ray -------------------------------------------------------------------------------------------

RAY_FIELDS = tuple(f.name for f in fields(RayConfig))
_RAY_DEFAULTS = RayConfig()
_RAY_SHAPE_FIELDS = ("gpus_per_worker", "threads_per_worker", "max_retries")


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Ray: several workers, GPUs or machines (needs the ray extra: pip install 'sam2prune[ray]')"
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N sequences at a time on Ray workers, each with its own model (default: one process without "
        "Ray; with --ray-address, as many workers as the cluster fits)",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join this Ray cluster, e.g. the address `ray start --head` prints (default with --workers: "
        "$RAY_ADDRESS if set, else a local cluster started for the run)",
    )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs each worker holds, a fraction shares one (e.g. 0.5) (default: 1 on CUDA, 0 on the CPU)",
    )
    group.add_argument(
        "--threads-per-worker",
        type=int,
        metavar="N",
        help="CPU threads each worker holds (default: on a local cluster, this machine's cores divided among "
        "the workers; on an existing cluster, 1)",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="times a failed sequence is run again before it is reported as failed "
        f"(default: {default_text(_RAY_DEFAULTS, 'max_retries')})",
    )


def ray_config(args: argparse.Namespace) -> RayConfig:
    """The Ray options; those that shape workers are refused without Ray.

    Raises:
        InputError: an invalid value, or a worker option without --workers or --ray-address.
    """
    try:
        config = RayConfig(**given_fields(args, RAY_FIELDS))
    except ValueError as error:
        raise option_error("Ray options", error) from error
    if config.enabled and getattr(args, "threads", None) is not None:
        raise InputError("--threads sets this process's CPU threads; give Ray workers theirs with --threads-per-worker")
    given = [option(name) for name in _RAY_SHAPE_FIELDS if getattr(args, name, None) is not None]
    if given and not config.enabled:
        raise InputError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for a run on Ray workers; "
            "add --workers N or --ray-address ADDR"
        )
    return config


def check_run_folder(out: Path, *, root: Path) -> None:
    from sam2prune.fsutil import check_output_location

    check_output_location(out, inputs=[("--root", root)])
