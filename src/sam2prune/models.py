"""Which SAM 2 models exist, how to build one, and how to load an official checkpoint strictly."""

from __future__ import annotations

import inspect
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.errors import CheckpointError, InputError
from sam2prune.scoped import seeded

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from sam2prune.config import PruningConfig
    from sam2prune.predictor import SAM2Predictor

CKPT_URL_SAM21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
CKPT_URL_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
_SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
_HUB_SIZES = {"t": "tiny", "s": "small", "b+": "base-plus", "l": "large"}


@dataclass(frozen=True)
class ModelSpec:
    """An official SAM 2 model: its config inside the ``sam2`` package and its checkpoint."""

    name: str
    config: str  # path relative to the sam2 package, e.g. configs/sam2.1/sam2.1_hiera_t.yaml
    checkpoint_file: str
    checkpoint_url: str
    hub_id: str


def _official_specs() -> dict[str, ModelSpec]:
    specs = {}
    for size, long_name in _SIZES.items():
        hub_size = _HUB_SIZES[size]
        specs[f"sam2.1_hiera_{size}"] = ModelSpec(
            name=f"sam2.1_hiera_{size}",
            config=f"configs/sam2.1/sam2.1_hiera_{size}.yaml",
            checkpoint_file=f"sam2.1_hiera_{long_name}.pt",
            checkpoint_url=f"{CKPT_URL_SAM21}/sam2.1_hiera_{long_name}.pt",
            hub_id=f"facebook/sam2.1-hiera-{hub_size}",
        )
        specs[f"sam2_hiera_{size}"] = ModelSpec(
            name=f"sam2_hiera_{size}",
            config=f"configs/sam2/sam2_hiera_{size}.yaml",
            checkpoint_file=f"sam2_hiera_{long_name}.pt",
            checkpoint_url=f"{CKPT_URL_SAM2}/sam2_hiera_{long_name}.pt",
            hub_id=f"facebook/sam2-hiera-{hub_size}",
        )
    return specs


MODELS: dict[str, ModelSpec] = _official_specs()


def _sam2_package_dir() -> Path:
    # find_spec does not run sam2/__init__.py (which initialises Hydra): `models` stays quick
    import importlib.util

    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the sam2 package is not installed: pip install sam2==1.1.0")
    return Path(next(iter(spec.submodule_search_locations)))


# Where sam2's own download script (checkpoints/download_ckpts.sh) puts the official files.
CHECKPOINT_DIR = Path("checkpoints")


def find_local_checkpoint(model: str) -> Path | None:
    """The official checkpoint of ``model`` in ``./checkpoints/`` under its official file name, if there."""
    spec = MODELS.get(model)
    if spec is None:
        return None
    path = CHECKPOINT_DIR / spec.checkpoint_file
    return path if path.is_file() else None


def check_image_size(image_size: int | None, *, name: str = "image_size") -> None:
    """Raises InputError (naming ``name``) unless ``image_size`` is None or a multiple of 32, >= 64."""
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 64 or image_size % 32
    ):
        raise InputError(f"{name} must be a multiple of 32 and >= 64, got {image_size!r}")


def model_input_size(model: str, image_size: int | None = None) -> int:
    """The input size in pixels of the predictor that ``build_predictor(model,
    image_size=image_size)`` builds, without building it.

    Raises:
        InputError: unknown model, or a bad image size.
    """

    _, yaml_path = resolve_config(model)
    check_image_size(image_size)
    if image_size is not None:
        return image_size
    config_size = config_image_size(yaml_path)
    if config_size is None:
        raise InputError(f"model config {yaml_path} gives no model.image_size: pass --image-size")
    return config_size


def config_image_size(yaml_path: Path) -> int | None:
    """The input size a model config gives (``model.image_size``), or None where it gives none.

    Raises:
        InputError: the config cannot be read, or its size is not one ``check_image_size``
            accepts (sam2 builds such a model, which then fails on the first frame).
    """
    config = load_model_config(yaml_path).model
    if "image_size" not in config:
        return None
    check_image_size(config.image_size, name=f"model.image_size in {yaml_path}")
    return int(config.image_size)


def official_input_size(spec: ModelSpec) -> int:
    """The model's square input size in pixels, from its official YAML."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(_sam2_package_dir() / spec.config).model.image_size)


def resolve_config(model: str) -> tuple[ModelSpec | None, Path]:
    """Map a model name or a YAML path to (official spec or None, YAML path).

    Raises:
        InputError: unknown model name, or a YAML path that does not exist.
    """
    if model in MODELS:
        spec = MODELS[model]
        return spec, _sam2_package_dir() / spec.config
    if model.endswith((".yaml", ".yml")):
        path = Path(model)
        if not path.is_file():
            raise InputError(f"model config {model} does not exist (expected a SAM 2 YAML file)")
        return None, path
    raise InputError(f"unknown model {model!r}: expected one of {', '.join(MODELS)} or a path to a SAM 2 YAML config")


def missing_checkpoint_message(model: str, *, cli: bool = False) -> str:
    """What to do without a checkpoint; ``cli`` names the command-line options, else the
    ``build_predictor`` arguments."""
    checkpoint, random = (
        ("--checkpoint PATH", "--random-weights") if cli else ("checkpoint=PATH", "random_weights=True")
    )
    spec = MODELS.get(model)
    if spec is None:
        return (
            f"no checkpoint given for {model}: pass {checkpoint} to the weights that match this "
            f"config, or {random} to build the architecture with random weights"
        )
    where = f" (or put it in ./{CHECKPOINT_DIR}/, where it is found)" if cli else ""
    message = (
        f"no checkpoint given for {spec.name}: download the official checkpoint {spec.checkpoint_file} "
        f"from {spec.checkpoint_url} (or the Hugging Face hub, {spec.hub_id}) and pass "
        f"{checkpoint}{where}, or pass {random} to build the architecture with random weights "
        "(masks are then meaningless; timings are real)"
    )
    # another model's official file there is what the user has: say which --model takes it
    others = [
        f"{other.checkpoint_file}: --model {other.name} uses it"
        for other in MODELS.values()
        if cli and other is not spec and (CHECKPOINT_DIR / other.checkpoint_file).is_file()
    ]
    return message + (f"; {CHECKPOINT_DIR}/ holds {'; '.join(others)}" if others else "")


# sam2prune's classes in place of sam2's, by config override (the state dict is the official one):
# the predictor; memory attention casting the bf16 memory bank to the compute dtype; and RoPE
# attentions whose tokens may carry explicit grid positions (exactly sam2's without them).
_ATTENTION = "sam2prune.predictor.attention"
_CLASS_OVERRIDES = {
    "model.memory_attention._target_": f"{_ATTENTION}.MemoryAttention",
    "model.memory_attention.layer.self_attention._target_": f"{_ATTENTION}.PositionedRoPEAttention",
    "model.memory_attention.layer.cross_attention._target_": f"{_ATTENTION}.PositionedRoPEAttention",
}


def load_model_config(yaml_path: Path) -> DictConfig:
    """A SAM 2 model config (YAML with a ``model`` section).

    Raises:
        InputError: it is not YAML, not UTF-8 text, or has no ``model`` section.
    """
    import yaml
    from omegaconf import DictConfig, OmegaConf

    try:
        cfg = OmegaConf.load(yaml_path)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise InputError(f"model config {yaml_path} cannot be read as YAML: {reason}") from error
    if not isinstance(cfg, DictConfig) or not isinstance(cfg.get("model"), DictConfig):
        raise InputError(f"{yaml_path} is not a SAM 2 model config (it has no 'model' section)")
    return cfg


def _compose_file(yaml_path: Path, overrides: list[str]) -> DictConfig:
    """What hydra's ``compose`` gives for a config file anywhere on disk (sam2's own
    ``compose`` only finds configs inside the sam2 package): the YAML with ``++key=value``
    overrides applied in order."""
    import yaml
    from omegaconf import OmegaConf

    cfg = load_model_config(yaml_path)
    for override in overrides:
        key, separator, value = override.partition("=")
        if not key.startswith("++") or not separator:
            raise ValueError(f"unexpected config override {override!r} (sam2prune applies ++key=value overrides)")
        OmegaConf.update(cfg, key[2:], yaml.safe_load(value), force_add=True)
    return cfg


@contextmanager
def _sam2_compose_from(yaml_path: Path) -> Iterator[None]:
    """Let ``sam2.build_sam.build_sam2_video_predictor`` read ``yaml_path`` (its overrides,
    e.g. the video post-processing settings, stay sam2's own instead of being copied here)."""
    import sam2.build_sam as build_sam

    official = build_sam.compose
    build_sam.compose = lambda config_name, overrides: _compose_file(yaml_path, list(overrides))
    try:
        yield
    finally:
        build_sam.compose = official


def _instantiate(
    yaml_path: Path, *, predictor_class: str, image_size: int | None, device: torch.device, seed: int
) -> SAM2Predictor:
    """Build the model of a SAM 2 YAML with sam2's ``build_sam2_video_predictor`` (random
    initial weights drawn from a private generator state: the caller's global RNG is untouched)."""
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [f"++model._target_={predictor_class}"]
    overrides += [f"++{key}={value}" for key, value in _CLASS_OVERRIDES.items()]
    if image_size is not None:
        overrides.append(f"++model.image_size={image_size}")
    from hydra.errors import InstantiationException

    with seeded(seed), _sam2_compose_from(yaml_path):
        try:
            return build_sam2_video_predictor(
                str(yaml_path), ckpt_path=None, device=str(device), mode="eval", hydra_overrides_extra=overrides
            )
        except InstantiationException as error:
            reason = " ".join(str(error).split())
            raise InputError(f"model config {yaml_path}: sam2 cannot build a model from it: {reason}") from error


def _fingerprint_of_config(yaml_path: Path) -> tuple[int, int, bool]:
    """(trunk embed dim, number of Hiera blocks, has SAM 2.1 keys) of a model config."""
    from omegaconf import OmegaConf
    from sam2.modeling.backbones.hieradet import Hiera

    model = load_model_config(yaml_path).model
    trunk = OmegaConf.select(model, "image_encoder.trunk", default=None) or OmegaConf.create({})
    defaults = inspect.signature(Hiera).parameters
    embed_dim = trunk.get("embed_dim", defaults["embed_dim"].default)
    stages = trunk.get("stages", defaults["stages"].default)
    is_21 = bool(model.get("no_obj_embed_spatial", False))
    return int(embed_dim), int(sum(stages)), is_21


def _fingerprint_of_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[int, int, bool] | None:
    patch = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    block_ids = {
        int(m.group(1)) for key in state_dict if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", key))
    }
    if patch is None or not block_ids:
        return None
    return int(patch.shape[0]), max(block_ids) + 1, "no_obj_embed_spatial" in state_dict


def guess_model(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Name of the official model whose architecture matches a state dict, if any."""
    fingerprint = _fingerprint_of_state_dict(state_dict)
    if fingerprint is None:
        return None
    package_dir = _sam2_package_dir()
    for name, spec in MODELS.items():
        if _fingerprint_of_config(package_dir / spec.config) == fingerprint:
            return name
    return None


def is_legacy_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like torch's pre-1.6 (non-zip) serialisation: a pickle protocol 2 header."""
    with open(path, "rb") as stream:
        return stream.read(2) == b"\x80\x02"


def _is_safetensors_file(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file: its JSON header's length (8 bytes, little
    endian, less than the file's size), then the header's ``{``."""
    with open(path, "rb") as stream:
        start = stream.read(9)
    return len(start) == 9 and start[8:] == b"{" and int.from_bytes(start[:8], "little") < path.stat().st_size


def _safetensors_message(path: Path, model: str | None) -> str:
    spec = MODELS.get(model) if model is not None else None
    official = (
        f"for {spec.name}, {spec.checkpoint_file} from {spec.checkpoint_url} (or the Hugging Face hub, {spec.hub_id})"
        if spec is not None
        else "`sam2prune models` lists their files"
    )
    return (
        f"checkpoint {path} is a safetensors file (such as the transformers-layout model.safetensors of the "
        f"facebook/sam2*-hf repositories); sam2prune reads SAM 2's official .pt checkpoints: {official}"
    )


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler found, without its advice (weights_only=False, file an issue)."""
    message = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
    reason = found.group(1) if found else (message.strip().splitlines() or [type(error).__name__])[0]
    return reason.strip()[:200]


# torch's weights-only unpickler names a global (a class or function) it refuses to load, or a call
# it refuses to make: the file holds Python objects; any other refusal is a corrupt pickle
_UNSAFE_PICKLE = re.compile(r"\bGLOBAL\b|add_safe_globals|unrecognized function")


def read_checkpoint(path: str | Path, *, model: str | None = None) -> dict[str, torch.Tensor]:
    """Read an official SAM 2 checkpoint ``{"model": state_dict}`` (or a bare state dict).

    Args:
        model: the official model the checkpoint is for, if known: a file of another format (a
            safetensors file) is told which official file to get instead.

    Raises:
        CheckpointError: the file is missing, a folder, unreadable, of another format, or holds
            no state dict.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; expected a checkpoint file (.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    expected = 'expected an official SAM 2 checkpoint, a file written by torch.save holding {"model": state_dict}'
    if _is_safetensors_file(path):
        raise CheckpointError(_safetensors_message(path, model))
    if not zipfile.is_zipfile(path) and not is_legacy_torch_file(path):
        # a download cut short has no zip directory at its end either
        size = path.stat().st_size
        held = "is empty (0 bytes)" if size == 0 else f"({size / 2**20:.1f} MiB) is not a PyTorch checkpoint file"
        raise CheckpointError(
            f"checkpoint {path} {held} ({expected}); a download that stopped short looks like this: download it again"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises weights_only=False: never for a file we cannot vouch for
        if _UNSAFE_PICKLE.search(str(error)):
            raise CheckpointError(
                f"checkpoint {path} holds Python objects besides tensors, which are not loaded for safety ({expected})"
            ) from error
        if (protocol := _pickle_protocol(path)) is not None and protocol > 2:
            raise CheckpointError(
                f"checkpoint {path} was written with pickle protocol {protocol}, which torch's safe loader "
                f"(weights_only) does not read ({_unpickling_reason(error)}); save it again with torch.save's "
                f"default protocol ({expected})"
            ) from error
        raise CheckpointError(
            f"checkpoint {path} is a corrupt PyTorch file ({_unpickling_reason(error)}); {expected}"
        ) from error
    except Exception as error:  # torch raises many types for corrupt files
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} is a corrupt PyTorch file ({reason}); {expected}") from error
    state_dict = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(
            f'checkpoint {path} holds no state dict (expected an official SAM 2 checkpoint {{"model": state_dict}})'
        )
    return state_dict


def _pickle_protocol(path: Path) -> int | None:
    """The pickle protocol of a torch zip file's ``data.pkl`` (its second byte), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            with archive.open(name) as data:
                head = data.read(2)
    except (OSError, zipfile.BadZipFile):
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def load_state_dict_strictly(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str, model_name: str
) -> None:
    """Load weights, failing on any missing, unexpected or differently shaped tensor.

    Raises:
        CheckpointError: naming the counts and which official model the checkpoint looks like.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        looks_like = guess_model(state_dict)
        if looks_like == model_name:
            kinds = (("missing", missing), ("unexpected", unexpected), ("differently shaped", mismatched))
            differing = "; ".join(f"{kind} {', '.join(keys[:3])}" for kind, keys in kinds if keys)
            hint = (
                f"it has the architecture of {model_name}, but its keys differ from the official {model_name}'s "
                f"(a modified or fine-tuned model?): {differing}"
            )
        else:
            hint = f"it looks like {looks_like}" if looks_like else "it matches no official SAM 2 model"
        examples = (missing + unexpected + mismatched)[:3]
        raise CheckpointError(
            f"checkpoint {source} does not fit model {model_name}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(mismatched)} differently shaped keys "
            f"(e.g. {', '.join(examples)}); {hint}"
        )
    model.load_state_dict(state_dict, strict=True)


def resolve_device(device: str) -> torch.device:
    """``device`` as a torch device this machine has.

    Raises:
        InputError: not a CPU or CUDA device name, or a CUDA device this machine does not have.
    """
    import torch

    expected = "expected cpu, cuda or cuda:N"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a device name: {expected}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}: sam2prune runs on the CPU or on CUDA GPUs; {expected}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def device_label(device: str) -> str:
    """What a model built on ``device`` (a name ``resolve_device`` accepts) reports as its device,
    as a run's settings record it: ``cuda`` is the current GPU, ``cuda:0``."""
    return "cuda:0" if device == "cuda" else device


def build_predictor(
    model: str = "sam2.1_hiera_t",
    *,
    checkpoint: str | Path | Mapping[str, torch.Tensor] | None = None,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "cpu",
    image_size: int | None = None,
    pruning: PruningConfig | None = None,
    checkpoint_source: str | None = None,
    model_name: str | None = None,
) -> SAM2Predictor:
    """Build a SAM 2 video predictor with the official ``SAM2VideoPredictor`` API.

    Args:
        model: one of ``sam2.1_hiera_{t,s,b+,l}``, ``sam2_hiera_{t,s,b+,l}``, or a path to a
            SAM 2 YAML config.
        checkpoint: path to an official checkpoint (``{"model": state_dict}``), or its state
            dict already read (``read_checkpoint``, e.g. shipped to Ray workers); loaded strictly.
        random_weights: build the real architecture with random weights (for speed and memory
            measurements and tests; masks are meaningless).
        seed: seed of the random weights (the same seed gives the same model; the global RNG
            is not touched).
        device: torch device, e.g. ``cpu`` or ``cuda``.
        image_size: the model's square input size (a multiple of 32, e.g. 512); default: the
            config's (1024 for the official models), checked alike.
        pruning: ``None`` gives the plain official predictor (the baseline); a ``PruningConfig``
            gives ``PrunedSAM2VideoPredictor``.
        checkpoint_source: what messages call the checkpoint, e.g. the file a state dict was
            read from; default: its path, or ``(state dict)``.
        model_name: the name the model goes by (``predictor.model_name``: messages, and the
            model an aligner or router file must have been made for), e.g. a YAML's path as the
            user typed it where ``model`` is its absolute path; default: the official name, or
            ``model``'s YAML path.

    Raises:
        InputError: unknown model, bad image size (given, or the config's) or device, both
            checkpoint and random_weights, or a sam2 version sam2prune was not tested with.
        CheckpointError: neither checkpoint nor random_weights (the message names the official
            checkpoint file and where to get it), an unreadable checkpoint, or one that does not
            fit the model.
    """
    from sam2prune.sam2_copies import check_sam2_version

    check_sam2_version()
    spec, yaml_path = resolve_config(model)
    model_name = model_name or (spec.name if spec else str(yaml_path))
    if checkpoint is None and not random_weights:
        raise CheckpointError(missing_checkpoint_message(model_name))
    if checkpoint is not None and random_weights:
        raise InputError("pass either checkpoint or random_weights=True, not both")
    check_image_size(image_size)
    if image_size is None:
        config_image_size(yaml_path)
    torch_device = resolve_device(device)
    state_dict: dict[str, torch.Tensor] | None
    if isinstance(checkpoint, Mapping):
        state_dict, source = dict(checkpoint), checkpoint_source or "(state dict)"
    else:
        state_dict = read_checkpoint(checkpoint, model=spec.name if spec else None) if checkpoint is not None else None
        source = checkpoint_source or str(checkpoint)

    predictor_class = (
        "sam2prune.predictor.SAM2Predictor" if pruning is None else "sam2prune.predictor.PrunedSAM2VideoPredictor"
    )
    predictor = _instantiate(
        yaml_path, predictor_class=predictor_class, image_size=image_size, device=torch_device, seed=seed
    )
    if state_dict is not None:
        load_state_dict_strictly(predictor, state_dict, source=source, model_name=model_name)
    predictor.model_name = model_name
    predictor.random_weights = random_weights
    predictor.config_path = yaml_path
    if pruning is not None:
        predictor.set_pruning(pruning)
    return predictor


def build_official_predictor(
    model: str, *, checkpoint: str | Path, device: str = "cpu", image_size: int | None = None
) -> SAM2VideoPredictor:
    """sam2's own ``SAM2VideoPredictor``, built by sam2's ``build_sam2_video_predictor`` with its
    default settings from the same config and checkpoint as ``build_predictor`` would use (to
    compare against it, e.g. in ``sam2prune bench --lengths``)."""
    from sam2.build_sam import build_sam2_video_predictor

    _, yaml_path = resolve_config(model)
    overrides = [f"++model.image_size={image_size}"] if image_size is not None else []
    with _sam2_compose_from(yaml_path):
        return build_sam2_video_predictor(
            str(yaml_path),
            ckpt_path=str(checkpoint),
            device=str(resolve_device(device)),
            hydra_overrides_extra=overrides,
        )


def with_pruning(predictor: SAM2Predictor, pruning: PruningConfig) -> SAM2Predictor:
    """A pruned predictor with the same architecture, input size, device and weights as
    ``predictor`` (built by ``build_predictor``), e.g. to compare both in one process."""
    if predictor.config_path is None:
        raise ValueError("with_pruning needs a predictor made by build_predictor (its config is unknown)")
    pruned = _instantiate(
        predictor.config_path,
        predictor_class="sam2prune.predictor.PrunedSAM2VideoPredictor",
        image_size=predictor.image_size,
        device=predictor.device,
        seed=0,
    )
    pruned.load_state_dict(predictor.state_dict(), strict=True)
    pruned.model_name = predictor.model_name
    pruned.random_weights = predictor.random_weights
    pruned.config_path = predictor.config_path
    pruned.set_pruning(pruning)
    return pruned


# torch.compile modes; sam2's vos_optimized predictor compiles with "max-autotune"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")


@contextmanager
def torch_compile_mode(mode: str, calls: list[dict] | None = None) -> Iterator[None]:
    """Make every ``torch.compile`` call inside the block use ``mode`` instead of the mode it
    names, keeping its other arguments; ``calls`` (if given) receives what each call asked for
    and got.

    sam2 1.1.0's ``vos_optimized`` predictor (``SAM2VideoPredictorVOS._compile_all_components``,
    and ``SAM2Base.__init__`` for the image encoder) compiles five components with
    ``mode="max-autotune"``, which autotunes every kernel for many minutes; building it inside
    this block measures the same compiled predictor with a cheaper mode, without copying sam2.
    """
    import torch

    if mode not in COMPILE_MODES:
        raise InputError(f"unknown torch.compile mode {mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    official = torch.compile

    def compile_with_mode(model: Any = None, **kwargs: Any) -> Any:
        if calls is not None:
            calls.append(
                {
                    "target": getattr(model, "__qualname__", type(model).__name__),
                    "asked": kwargs.get("mode"),
                    "mode": mode,
                    **{key: value for key, value in kwargs.items() if key in ("fullgraph", "dynamic")},
                }
            )
        return official(model, **{**kwargs, "mode": mode})

    torch.compile = compile_with_mode
    try:
        yield
    finally:
        torch.compile = official


def official_predictor(
    like: SAM2Predictor,
    *,
    vos_optimized: bool = False,
    compile_mode: str | None = None,
    compile_calls: list[dict] | None = None,
) -> SAM2VideoPredictor:
    """sam2's own video predictor for the same model, input size and device as ``like`` (built by
    ``build_predictor``), with its weights: ``sam2.sam2_video_predictor.SAM2VideoPredictor``, or
    ``SAM2VideoPredictorVOS`` with ``vos_optimized``, built by sam2's
    ``build_sam2_video_predictor`` with none of sam2prune's classes.

    Without sam2's CUDA extension, sam2 tries hole filling on every frame, fails, warns and keeps
    the mask; ``fill_hole_area`` is then set to 0, which gives the same masks without the failed
    import per frame (as ``SAM2Predictor`` does).

    Args:
        compile_mode: with ``vos_optimized``, the ``torch.compile`` mode used in place of sam2's
            ``"max-autotune"`` (``torch_compile_mode``); None: sam2's own.
        compile_calls: a list receiving the compile calls (``torch_compile_mode``).
    """
    from sam2.build_sam import build_sam2_video_predictor

    from sam2prune.predictor.baseline import cuda_extension_available

    if like.config_path is None:
        raise ValueError("official_predictor needs a predictor made by build_predictor (its config is unknown)")
    lowered = torch_compile_mode(compile_mode, compile_calls) if vos_optimized and compile_mode else nullcontext()
    with seeded(0), _sam2_compose_from(like.config_path), lowered:
        predictor = build_sam2_video_predictor(
            str(like.config_path),
            ckpt_path=None,
            device=str(like.device),
            mode="eval",
            hydra_overrides_extra=[f"++model.image_size={like.image_size}"],
            vos_optimized=vos_optimized,
        )
    load_state_dict_strictly(predictor, like.state_dict(), source="the benchmark's weights", model_name=like.model_name)
    if predictor.fill_hole_area > 0 and not cuda_extension_available():
        predictor.fill_hole_area = 0
    return predictor
