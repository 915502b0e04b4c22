"""``sam2prune fit-aligner``: the token-to-text projection of the router's text signal."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.cli.common import (
    Command,
    DataSelection,
    ModelOptions,
    add_data_options,
    add_model_options,
    add_overwrite_option,
    build,
    data_selection,
    default_of,
    log,
    model_inputs,
    model_options,
    path_argument,
    resolve_weights,
    select_sequences,
)
from sam2prune.errors import InputError
from sam2prune.wording import counted

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence


def check_labels(path: Path, labels: dict[str, str], sequences: list[Sequence], data: DataSelection) -> None:
    """Refuse LABELS.json (``path``, read as ``labels``) when none of its labels names an object of
    the selected ``sequences``; log a warning naming those that name none.

    Raises:
        InputError: naming the file and the unmatched labels (five, then a count).
    """
    from sam2prune.scorers.router.semantic import unmatched_labels

    selection = "--sequences" if data.sequences else "--limit" if data.limit is not None else None
    unmatched = unmatched_labels(sequences, labels, selection=selection)
    if len(unmatched) == len(labels):
        more = f"; and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        raise InputError(f"--labels {path}: no label names an object of the dataset: {'; '.join(unmatched[:5])}{more}")
    if unmatched:
        log.warning("--labels %s: labels without an object in the dataset: %s", path, "; ".join(unmatched))


def fit_aligner(
    *,
    data: DataSelection,
    labels: Path,
    out: Path,
    text_encoder: str = "minilm",
    ridge: float = 1.0,
    frame_step: int = 1,
    model: ModelOptions = ModelOptions(),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit the aligner by ridge least squares from SAM 2 token features to the text space on
    the objects ``labels`` names, write it to ``out`` and return the fit's statistics.

    Args:
        labels: LABELS.json, ``{"<sequence>/<object id>": "a black swan", ...}``.
        text_encoder: ``minilm``, ``clip:<folder or hub id>`` or ``open_clip:<arch>:<file>``.
        ridge: the L2 penalty.
        frame_step: use every Nth annotated frame.
        overwrite: replace an existing ``out``.
    """
    from sam2prune.fsutil import check_output_file
    from sam2prune.scorers.router.semantic import fit_aligner as fit
    from sam2prune.scorers.router.semantic import read_labels
    from sam2prune.text.encoders import load_text_encoder

    inputs = [("--root", data.root), ("--labels", labels), *model_inputs(model)]
    check_output_file(out, option="--out", inputs=inputs, overwrite=overwrite)
    phrases = read_labels(labels)
    if not ridge >= 0:
        raise InputError(f"--ridge must be >= 0, got {ridge:g}")
    if not math.isfinite(ridge):
        raise InputError(f"--ridge must be finite, got {ridge:g}")
    if frame_step < 1:
        raise InputError(f"--frame-step must be >= 1, got {frame_step}")
    weights = resolve_weights(model, required=True)
    sequences = select_sequences(data)
    check_labels(labels, phrases, sequences, data)
    encoder = load_text_encoder(text_encoder)
    predictor = build(model, weights)
    aligner, stats = fit(predictor, sequences, phrases, text_encoder=encoder, ridge=ridge, frame_step=frame_step)
    aligner.save(out)
    print(
        f"aligner fit on {counted(stats['tokens'], 'token')} of {counted(stats['objects'], 'object')} over "
        f"{counted(stats['frames'], 'frame')} "
        f"(train mean cosine {stats['train_mean_cosine']:.3f}), text encoder {encoder.name}, -> {out}"
    )
    return stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser, default_dataset="davis")
    parser.add_argument(
        "--labels",
        type=path_argument,
        required=True,
        metavar="LABELS.json",
        help='phrase of each object: {"<sequence>/<object id>": "a black swan", ...}',
    )
    parser.add_argument(
        "--out",
        type=path_argument,
        required=True,
        metavar="ALIGNER.pt",
        help="where the aligner is written (pass it to --aligner)",
    )
    add_overwrite_option(parser, "--out file")
    parser.add_argument(
        "--text-encoder",
        default=default_of(fit_aligner, "text_encoder"),
        help="minilm, clip:<folder or hub id>, open_clip:<arch>:<file> (default: %(default)s)",
    )
    parser.add_argument(
        "--ridge",
        type=float,
        default=default_of(fit_aligner, "ridge"),
        help="L2 penalty; 0 (none) needs more tokens than the map has unknowns (257) (default: %(default)s)",
    )
    parser.add_argument(
        "--frame-step",
        type=int,
        default=default_of(fit_aligner, "frame_step"),
        metavar="N",
        help="use every Nth annotated frame (default: %(default)s)",
    )
    add_model_options(parser)


def handle(args: argparse.Namespace) -> int:
    fit_aligner(
        data=data_selection(args),
        labels=args.labels,
        out=args.out,
        text_encoder=args.text_encoder,
        ridge=args.ridge,
        frame_step=args.frame_step,
        model=model_options(args),
        overwrite=args.overwrite,
    )
    return 0


COMMAND = Command(
    run=fit_aligner,
    add_arguments=add_arguments,
    handle=handle,
    help="fit the token-to-text projection for the text signal",
    description=(
        "Closed-form ridge least squares from SAM 2 token features to the text space: tokens inside each "
        "labelled object are mapped to its phrase's embedding, background tokens to that of 'background'. "
        'LABELS.json maps "<sequence>/<object id>" to a phrase.'
    ),
    examples=(
        "sam2prune fit-aligner --root DAVIS --labels labels.json --out aligner.pt --checkpoint sam2.1_hiera_tiny.pt",
    ),
)
