"""Semantic relevance of each token to a text: r_i = cos(P v_i, e).

SAM 2's tokens v_i (C = 256) and a text embedding e (D, e.g. 384 for MiniLM) live in different
spaces. P is a linear map from token space to text space, fit once, without gradients, by ridge
least squares on tokens with known content: tokens inside an annotated object are mapped to the
embedding of its phrase, background tokens to the embedding of "background".

Why not the source paper's projection: it fits, per video, a least-squares projection from the
tokens of a frame onto ONE text vector broadcast to every token, i.e. it minimises
sum_i ||v_i - t||^2 over the single vector t that the text is projected to. The solution is
t = mean_i v_i, the mean visual token, whatever the text says; the relevance computed from it
measures how typical a token is of the frame, and carries no information about the text. A
projection only carries text information when it is fit on tokens paired with different texts,
which is what this aligner does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write, load_versioned_file, read_json
from sam2prune.progress import progress as progress_bar

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence
    from sam2prune.predictor import SAM2Predictor
    from sam2prune.text.encoders import TextEncoder

ALIGNER_FORMAT = "sam2prune-aligner"
ALIGNER_VERSION = 1
BACKGROUND_PHRASE = "background"
OBJECT_COVERAGE = 0.5  # a token is an object's when more than this fraction of its patch is inside it

log = logging.getLogger("sam2prune")


def fit_ridge(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """Closed-form ridge regression with an unregularised bias.

    Args:
        features: ``[n, C]``; targets: ``[n, D]``; ridge: L2 penalty (>= 0).

    Returns:
        ``[C + 1, D]``: the map (rows 0..C-1) and the bias (last row), float32.

    Raises:
        torch.linalg.LinAlgError: the system is singular (at ``ridge`` 0: a constant or zero
            channel, linearly dependent channels, fewer than ``C + 1`` rows; at any ridge: no row).
    """
    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    penalty = torch.full((x.shape[1],), float(ridge), dtype=torch.float64)
    penalty[-1] = 0.0
    gram = x.T @ x + torch.diag(penalty)
    return torch.linalg.solve(gram, x.T @ targets.double()).float()


def cosine_relevance(projected: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of projected tokens ``[B, N, D]`` to a text embedding ``[D]`` (same
    device): ``[B, N]``."""
    return F.cosine_similarity(projected, text_embedding[None, None], dim=-1)


@dataclass
class Aligner:
    """The fitted token-to-text map and what it was fit with."""

    weight: torch.Tensor  # [C + 1, D]
    text_encoder: str
    model: str
    image_size: int
    random_weights: bool = False  # fit on the tokens of a model with random weights (files before: False)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` tokens -> ``[..., D]`` in text space."""
        weight = self.weight.to(tokens.device)
        return tokens.float() @ weight[:-1] + weight[-1]

    def relevance(self, tokens: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each projected token to the text: ``[B, N, C]`` -> ``[B, N]``."""
        return cosine_relevance(self.project(tokens), text_embedding.to(tokens.device))

    def to(self, device: torch.device) -> Aligner:
        """The same aligner with its weight on ``device``."""
        return replace(self, weight=self.weight.to(device))

    def save(self, path: Path) -> None:
        payload = {
            "format": ALIGNER_FORMAT,
            "version": ALIGNER_VERSION,
            "weight": self.weight,
            "text_encoder": self.text_encoder,
            "model": self.model,
            "image_size": self.image_size,
            "random_weights": self.random_weights,
        }
        atomic_write(path, lambda temp: torch.save(payload, temp))

    @classmethod
    def load(cls, path: str | Path) -> Aligner:
        """Strict: the file must be a sam2prune aligner of this version with all its fields.

        Raises:
            InputError: naming the file and what is wrong.
        """
        path = Path(path)
        payload = load_versioned_file(
            path,
            kind="aligner",
            file_format=ALIGNER_FORMAT,
            version=ALIGNER_VERSION,
            hint="fit one with `sam2prune fit-aligner`",
        )
        expected = {"format", "version", "weight", "text_encoder", "model", "image_size"}
        if set(payload) - {"random_weights"} != expected:  # random_weights: absent from earlier files
            raise InputError(f"aligner {path}: expected the fields {sorted(expected)}, found {sorted(payload)}")
        weight = payload["weight"]
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise InputError(f"aligner {path}: weight must be a [C + 1, D] tensor")
        if not torch.isfinite(weight).all():
            raise InputError(
                f"aligner {path}: weight holds NaN or infinite values, expected finite ones; refit it with "
                "`sam2prune fit-aligner` and a finite --ridge"
            )
        return cls(
            weight.float(),
            str(payload["text_encoder"]),
            str(payload["model"]),
            int(payload["image_size"]),
            bool(payload.get("random_weights", False)),
        )


def label_key(sequence_name: str, obj_id: int) -> str:
    """The key of an object in LABELS.json: ``"<sequence>/<object id>"``."""
    return f"{sequence_name}/{obj_id}"


def unmatched_labels(sequences: Iterable, labels: dict[str, str], *, selection: str | None = None) -> list[str]:
    """The keys of ``labels`` that name no object of ``sequences`` (``Sequence``), as
    ``fit_aligner`` matches them (``label_key`` exactly), each with why:
    ``"blackswan/2 (blackswan's objects: 1)"``, ``"bear/1 (no sequence bear)"``; with
    ``selection`` (the option that chose the sequences, e.g. ``--sequences``): ``"bear/1 (no
    sequence bear among those --sequences selected)"``."""
    objects = {sequence.name: sequence.obj_ids for sequence in sequences}
    unmatched = []
    for key in labels:
        name = key.rpartition("/")[0]
        if name not in objects:
            why = f"no sequence {name} among those {selection} selected" if selection else f"no sequence {name}"
            unmatched.append(f"{key} ({why})")
        elif key not in {label_key(name, obj_id) for obj_id in objects[name]}:
            unmatched.append(f"{key} ({name}'s objects: {', '.join(map(str, objects[name])) or 'none'})")
    return unmatched


def read_labels(path: Path) -> dict[str, str]:
    """LABELS.json: ``{"<sequence>/<object id>": "phrase", ...}``.

    Raises:
        InputError: naming the file and the entry that is malformed.
    """
    labels = read_json(path, what="labels file")
    if not isinstance(labels, dict) or not labels:
        raise InputError(f'labels file {path}: expected {{"<sequence>/<object id>": "phrase", ...}}')
    for key, phrase in labels.items():
        sequence, _, obj_id = key.rpartition("/")
        if (
            not sequence
            or not (obj_id.isascii() and obj_id.isdigit())
            or not isinstance(phrase, str)
            or not phrase.strip()
        ):
            raise InputError(f'labels file {path}: entry {key!r}: expected "<sequence>/<object id>": "phrase"')
    return labels


def object_coverage(labels: np.ndarray, obj_ids: list[int], grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each token's patch covered by each object: ``[len(obj_ids), H*W]``."""
    masks = torch.stack([torch.from_numpy(labels == obj_id).float() for obj_id in obj_ids])[:, None]
    return F.adaptive_avg_pool2d(masks, grid).flatten(1)


def object_tokens(labels: np.ndarray, obj_ids: list[int], grid: tuple[int, int]) -> torch.Tensor:
    """Whether each token is an object's, mostly (> ``OBJECT_COVERAGE``) inside it:
    ``[len(obj_ids), H*W]`` bool."""
    return object_coverage(labels, obj_ids, grid) > OBJECT_COVERAGE


def collect_aligner_data(
    frames: list[tuple[torch.Tensor, np.ndarray, dict[int, torch.Tensor]]],
    background: torch.Tensor,
    *,
    grid: tuple[int, int],
    background_ratio: float = 2.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair tokens with target embeddings: a token mostly (> 50%) inside a labelled object gets
    its phrase's embedding; tokens that no object touches get the background embedding
    (a random subsample of ``background_ratio`` per object token).

    Args:
        frames: per frame, (tokens ``[H*W, C]``, label map ``[h, w]`` at frame resolution,
            {object id: phrase embedding ``[D]``}).
        background: ``[D]``.
        grid: ``(H, W)`` token grid (SAM 2 resizes frames to a square, so labels are resized too).

    Returns:
        (features ``[n, C]``, targets ``[n, D]``).
    """
    generator = torch.Generator().manual_seed(seed)
    pairs = [
        frame_pairs(
            tokens,
            labels,
            phrases,
            object_tokens(labels, list(phrases), grid),
            background,
            grid=grid,
            generator=generator,
            background_ratio=background_ratio,
        )
        for tokens, labels, phrases in frames
    ]
    return joined_pairs(pairs)


def joined_pairs(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames' ``frame_pairs`` as one (features ``[n, C]``, targets ``[n, D]``)."""
    return torch.cat([features for features, _ in pairs]), torch.cat([targets for _, targets in pairs])


def frame_pairs(
    tokens: torch.Tensor,
    labels: np.ndarray,
    phrases: dict[int, torch.Tensor],
    inside_objects: torch.Tensor,
    background: torch.Tensor,
    *,
    grid: tuple[int, int],
    generator: torch.Generator,
    background_ratio: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's pairs of ``collect_aligner_data`` (``generator`` drawn from in frame order):
    (features ``[n, C]``: the tokens chosen, copied; targets ``[n, D]``). ``inside_objects``:
    ``object_tokens`` of the label map for the objects of ``phrases``, in their order."""
    features, targets = [], []
    object_count = 0
    for inside, embedding in zip(inside_objects, phrases.values(), strict=True):
        features.append(tokens[inside])
        targets.append(embedding.expand(int(inside.sum()), -1))
        object_count += int(inside.sum())
    touched = F.adaptive_avg_pool2d(torch.from_numpy(labels != 0).float()[None, None], grid).flatten()
    empty = torch.nonzero(touched == 0).flatten()
    count = min(len(empty), max(1, round(background_ratio * object_count)))
    chosen = empty[torch.randperm(len(empty), generator=generator)[:count]]
    features.append(tokens[chosen])
    targets.append(background.expand(len(chosen), -1))
    return torch.cat(features), torch.cat(targets)


def fit_aligner(
    predictor: SAM2Predictor,
    sequences: Iterable[Sequence],
    labels: dict[str, str],
    *,
    text_encoder: TextEncoder,
    ridge: float = 1.0,
    frame_step: int = 1,
    progress: bool = True,
) -> tuple[Aligner, dict]:
    """Fit the token-to-text map on the labelled objects of a dataset.

    Args:
        predictor: a SAM 2 predictor (its image encoder gives the tokens).
        sequences: dataset sequences (``sam2prune.data.datasets.Sequence``).
        labels: {"<sequence>/<object id>": phrase}.
        text_encoder: a ``TextEncoder``.

    Returns:
        (the aligner, fit statistics: tokens, frames, objects (those with a token), train mean
        cosine). Labelled objects without a token more than half inside them on any frame used
        are left out with a warning.

    Raises:
        InputError: no labelled object found in the sequences, or none has a token more than half
            inside it; at ``ridge`` 0, fewer tokens than the map's ``C + 1`` unknowns or a
            singular system.
    """
    wanted = set(labels)
    phrases = sorted(set(labels.values()))
    embeddings = dict(zip(phrases, text_encoder.encode(phrases), strict=False))
    background = text_encoder.encode([BACKGROUND_PHRASE])[0]
    side = predictor.image_size // 16
    # each frame's pairs as it is encoded (the same draws as collect_aligner_data's): only the
    # tokens chosen are kept, not every frame's grid (4 MiB a frame at 1024 px)
    generator = torch.Generator().manual_seed(0)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    token_counts: dict[str, int] = {}  # label key -> tokens inside the object over the frames used
    for sequence in progress_bar(list(sequences), desc="aligner features", unit="sequence", disable=not progress):
        objects = {obj_id: label_key(sequence.name, obj_id) for obj_id in sequence.obj_ids}
        objects = {obj_id: key for obj_id, key in objects.items() if key in wanted}
        if not objects:
            continue
        for key in objects.values():
            token_counts.setdefault(key, 0)
        indices = sorted(sequence.annotated)[::frame_step]
        with torch.inference_mode():
            for frame_idx, tokens, _ in predictor.encode_frames(sequence.source, indices):
                gt = sequence.ground_truth(frame_idx)
                inside = object_tokens(gt, list(objects), (side, side))
                for key, count in zip(objects.values(), inside.sum(dim=1).tolist(), strict=True):
                    token_counts[key] += count
                phrase_of = {obj_id: embeddings[labels[key]] for obj_id, key in objects.items()}
                pairs.append(
                    frame_pairs(
                        tokens[0].cpu(), gt, phrase_of, inside, background, grid=(side, side), generator=generator
                    )
                )
    if not pairs:
        raise InputError(f"no labelled object found in the dataset (labels name e.g. {next(iter(wanted))})")
    tokenless = [key for key, count in token_counts.items() if count == 0]
    if tokenless:
        more = f" and {len(tokenless) - 5} more" if len(tokenless) > 5 else ""
        where = (
            f"no token more than half inside {', '.join(tokenless[:5])}{more} on the frames used "
            f"({side}x{side} tokens at image size {predictor.image_size}"
            f"{f', one annotated frame in {frame_step}' if frame_step > 1 else ''})"
        )
        if len(tokenless) == len(token_counts):
            fewer = " or a smaller --frame-step" if frame_step > 1 else ""
            raise InputError(
                f"{where}: the aligner would be fit on background tokens only; pass a larger --image-size{fewer}, "
                "or label larger objects"
            )
        log.warning("%s: left out of the aligner", where)
    features, targets = joined_pairs(pairs)
    unknowns = features.shape[1] + 1
    if ridge == 0 and len(features) < unknowns:
        raise InputError(
            f"--ridge 0 needs at least {unknowns} tokens (one per unknown of the map: {unknowns - 1} channels "
            f"and a bias) to determine the aligner, got {len(features)}; pass --ridge > 0, or use more frames"
        )
    try:
        weight = fit_ridge(features, targets, ridge)
    except torch.linalg.LinAlgError as error:
        raise InputError(
            f"--ridge {ridge:g}: the {len(features)} tokens do not determine the aligner (their system is "
            "singular: a channel is constant or zero, or channels are linearly dependent); pass --ridge > 0"
        ) from error
    aligner = Aligner(
        weight,
        text_encoder.name,
        getattr(predictor, "model_name", "sam2"),
        predictor.image_size,
        bool(getattr(predictor, "random_weights", False)),
    )
    fitted = F.cosine_similarity(aligner.project(features), targets, dim=-1).mean().item()
    return aligner, {
        "tokens": len(features),
        "frames": len(pairs),
        "objects": len(token_counts) - len(tokenless),
        "train_mean_cosine": fitted,
    }
