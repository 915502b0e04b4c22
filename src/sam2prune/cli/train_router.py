"""``sam2prune train-router``: the MLP of the paper/learned router, on a dataset with masks."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sam2prune.cli.common import (
    PRUNING_DEFAULTS,
    Command,
    DataSelection,
    ModelOptions,
    add_data_options,
    add_model_options,
    add_overwrite_option,
    build,
    data_selection,
    default_of,
    default_text,
    given_fields,
    int_list,
    log,
    model_inputs,
    model_options,
    option_error,
    path_argument,
    resolve_weights,
    select_sequences,
    signal_list,
)
from sam2prune.cli.fit_aligner import check_labels
from sam2prune.config import SIGNALS, UNCERTAINTY_MODES, PruningConfig
from sam2prune.errors import InputError
from sam2prune.wording import no_effect

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence

# the PruningConfig fields that decide how the training signals are computed, with their flags
SIGNAL_FIELDS = (
    "retention",
    "uncertainty",
    "mc_passes",
    "mc_dropout_p",
    "uncertainty_blocks",
    "prior_dilation",
    "seed",
)


def _refuse_ineffective(
    pruning: PruningConfig,
    router: Literal["learned", "paper"],
    signals: tuple[str, ...],
    *,
    labels: Path | None,
    aligner: str | None,
) -> None:
    """Raises InputError naming options that change nothing for a router of ``signals``
    (``--mc-passes`` with analytic uncertainty, ``--aligner`` without the text signal, ...), or
    ``--mc-dropout-p 0``, which makes its uncertainty signal zero."""
    from dataclasses import replace

    from sam2prune.config import ineffective_fields

    defaults = PruningConfig()
    # the retention (held-out recall) and the seed (initialisation, shuffling) always count
    given = [f for f in SIGNAL_FIELDS if f not in ("retention", "seed") and getattr(pruning, f) != getattr(defaults, f)]
    try:  # (the phrases come from --labels: a stand-in text makes the config valid)
        trained = replace(
            pruning, scorer="router", router=router, signals=signals, text="-" if "text" in signals else None
        )
    except ValueError as error:  # e.g. the paper router has no prior input
        raise option_error("router options", error) from error
    unused = ["--" + name.replace("_", "-") for name in ineffective_fields(trained, given)]
    if "text" not in signals:
        unused += [option for option, value in (("--labels", labels), ("--aligner", aligner)) if value is not None]
    if unused:
        raise InputError(f"{no_effect(unused)} on a {router} router of {','.join(signals)}")
    if "uncertainty" in signals and pruning.mc_dropout_p == 0:
        # without dropout the variance is zero: the router would learn from a constant input
        raise InputError(
            f"--mc-dropout-p 0 makes the uncertainty signal of a {router} router of {','.join(signals)} zero "
            "everywhere; give a rate in (0, 1), or leave uncertainty out of --signals"
        )


def _check_phrases(path: Path, phrases: dict[str, str], sequences: list[Sequence], data: DataSelection) -> None:
    """Check LABELS.json against the selected sequences before the model is built: as fit-aligner
    (labels that name no object are logged, none matching is refused), and every trained object
    needs a phrase.

    Raises:
        InputError: naming the file and the objects without a phrase (five, then a count).
    """
    from sam2prune.scorers.router.semantic import label_key
    from sam2prune.scorers.router.train import trained_objects

    check_labels(path, phrases, sequences, data)
    missing = [
        label_key(sequence.name, obj_id)
        for sequence in sequences
        for obj_id in trained_objects(sequence)
        if label_key(sequence.name, obj_id) not in phrases
    ]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(
            f"--labels {path} has no phrase for {', '.join(missing[:5])}{more}; every trained object needs one "
            "(add them, or leave their sequences out with --sequences)"
        )


def train_router(
    *,
    data: DataSelection,
    out: Path,
    router: Literal["learned", "paper"] = "learned",
    labels: Path | None = None,
    aligner: str | None = None,
    signals: tuple[str, ...] | None = None,
    epochs: int = 20,
    learning_rate: float = 1e-3,
    loss: Literal["bce", "ranking"] = "bce",
    holdout_every: int = 5,
    pruning: PruningConfig = PruningConfig(scorer="prior"),
    model: ModelOptions = ModelOptions(),
    overwrite: bool = False,
) -> list[dict[str, float]]:
    """Train the router MLP: per token, the target is the fraction of its patch inside the
    dilated ground-truth mask; frames whose index is divisible by ``holdout_every`` are held
    out. Writes the weights to ``out`` and returns the training history, one entry per epoch.

    Args:
        router: paper = the source paper's inputs; learned = all signals.
        labels, aligner: object phrases (LABELS.json) and the token-to-text projection, for the
            text signal.
        signals: the MLP's inputs; None: paper visual,uncertainty, learned
            visual,uncertainty,prior, each with text when ``labels`` are given.
        pruning: how the signals are computed (uncertainty mode, passes, dropout and blocks,
            prior dilation), the retention of the held-out recall, and the seed of
            initialisation, shuffling and dropout; the tracker runs with it.
        overwrite: replace an existing ``out``.
    """
    from sam2prune.fsutil import check_output_file
    from sam2prune.scorers.router.fusion import LearnedRouter, PaperRouter, save_router
    from sam2prune.scorers.router.semantic import label_key, read_labels
    from sam2prune.scorers.router.train import collect_examples, training_scorer
    from sam2prune.scorers.router.train import train_router as train
    from sam2prune.text.encoders import load_text_encoder

    if epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {epochs}")
    if not learning_rate > 0:
        raise InputError(f"--learning-rate must be > 0, got {learning_rate}")
    if not math.isfinite(learning_rate):
        raise InputError(f"--learning-rate must be finite, got {learning_rate}")
    if holdout_every < 2:
        raise InputError(f"--holdout-every must be >= 2 (every frame would be held out), got {holdout_every}")
    inputs = [("--root", data.root), *model_inputs(model)]
    inputs += [(option, Path(path)) for option, path in (("--labels", labels), ("--aligner", aligner)) if path]
    check_output_file(out, option="--out", inputs=inputs, overwrite=overwrite)
    phrases = read_labels(labels) if labels else None
    chosen = signals or (("visual", "text", "uncertainty") if router == "paper" else ("visual", "uncertainty", "prior"))
    if phrases and signals is None:
        chosen = (*chosen, "text")
    chosen = tuple(name for name in SIGNALS if name in chosen)
    if "text" in chosen and (phrases is None or aligner is None):
        why = " (the paper router reads it unless --signals leaves it out)" if router == "paper" and not signals else ""
        needed = [
            option
            for option, value in (
                ("--labels LABELS.json (object phrases)", phrases),
                ("--aligner ALIGNER.pt (fit one with `sam2prune fit-aligner`)", aligner),
            )
            if value is None
        ]
        raise InputError(f"the text signal{why} needs {' and '.join(needed)}")
    _refuse_ineffective(pruning, router, chosen, labels=labels, aligner=aligner)
    weights = resolve_weights(model, required=True)
    sequences = select_sequences(data)
    if phrases is not None:
        assert labels is not None  # the phrases come from --labels
        _check_phrases(labels, phrases, sequences, data)
    predictor = build(model, weights, pruning)
    text_relevance = phrase_of = None
    if "text" in chosen:
        from sam2prune.scorers.router.fusion import AlignedTextRelevance, load_aligner_for

        assert phrases is not None and aligner is not None  # checked above
        projection = load_aligner_for(
            aligner,
            channels=predictor.hidden_dim,
            model_name=predictor.model_name,
            image_size=predictor.image_size,
            random_weights=predictor.random_weights,
            log=log.warning,
        )
        text_relevance = AlignedTextRelevance(projection, load_text_encoder(projection.text_encoder))

        def phrase_of(sequence: str, obj_id: int) -> str:
            return phrases[label_key(sequence, obj_id)]  # every trained object has one: _check_phrases

    scorer = training_scorer(predictor, pruning, chosen, text_relevance)
    examples = collect_examples(predictor, sequences, scorer, phrase_of=phrase_of, holdout_every=holdout_every)
    module, history = train(
        examples,
        kind=router,
        channels=predictor.hidden_dim,
        signals=chosen,
        epochs=epochs,
        learning_rate=learning_rate,
        loss=loss,
        retention=pruning.retention,
        seed=pruning.seed,
    )
    assert isinstance(module, PaperRouter | LearnedRouter)  # train builds the router of ``kind``
    save_router(
        out,
        module,
        channels=predictor.hidden_dim,
        signals=chosen,
        hidden=module.hidden,
        # what it was trained on, checked where it is used (build_router_scorer)
        extra={
            "history": history,
            "model": predictor.model_name,
            "image_size": predictor.image_size,
            "random_weights": predictor.random_weights,
        },
    )
    held_out = sum(e.held_out for e in examples)
    print(json.dumps(history[-1]))
    print(
        f"{router} router on signals {','.join(chosen)}: {len(examples) - held_out} training and {held_out} held-out "
        f"examples; loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}; held-out recall of object tokens at "
        f"retention {pruning.retention:g}: {history[-1]['held_out_recall']:.3f} -> {out}"
    )
    return history


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser, default_dataset="davis")
    parser.add_argument(
        "--out",
        type=path_argument,
        required=True,
        metavar="ROUTER.pt",
        help="where the router weights are written (pass them to --router-weights)",
    )
    add_overwrite_option(parser, "--out file")
    parser.add_argument(
        "--router",
        choices=("learned", "paper"),
        default=default_of(train_router, "router"),
        help="which MLP: paper = the source paper's inputs; learned = all signals (default: %(default)s)",
    )
    parser.add_argument(
        "--labels", type=path_argument, metavar="LABELS.json", help="object phrases, for the text signal"
    )
    parser.add_argument("--aligner", metavar="ALIGNER.pt", help="token-to-text projection, for the text signal")
    parser.add_argument(
        "--signals",
        type=signal_list,
        metavar="LIST",
        help="default: paper visual,text,uncertainty (the text needs --labels and --aligner); learned "
        "visual,uncertainty,prior, and text with --labels",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=default_of(train_router, "epochs"),
        help="passes over the examples (default: %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=default_of(train_router, "learning_rate"),
        metavar="LR",
        help="Adam learning rate (default: %(default)s)",
    )
    parser.add_argument(
        "--loss",
        choices=("bce", "ranking"),
        default=default_of(train_router, "loss"),
        help="bce on the token targets, or a pairwise ranking loss (default: %(default)s)",
    )
    parser.add_argument(
        "--retention",
        type=float,
        metavar="R",
        help=f"retention of the held-out recall (default: {default_text(PRUNING_DEFAULTS, 'retention')})",
    )
    parser.add_argument(
        "--holdout-every",
        type=int,
        default=default_of(train_router, "holdout_every"),
        metavar="N",
        help="hold out frames whose index is divisible by N (default: %(default)s)",
    )
    parser.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_MODES,
        help=f"uncertainty signal mode (default: {default_text(PRUNING_DEFAULTS, 'uncertainty')})",
    )
    parser.add_argument(
        "--mc-passes",
        type=int,
        metavar="T",
        help=f"dropout samples for --uncertainty mc (default: {default_text(PRUNING_DEFAULTS, 'mc_passes')})",
    )
    parser.add_argument(
        "--mc-dropout-p",
        type=float,
        metavar="P",
        help=f"dropout rate of the uncertainty signal (default: {default_text(PRUNING_DEFAULTS, 'mc_dropout_p')})",
    )
    parser.add_argument(
        "--uncertainty-blocks",
        type=int_list,
        metavar="LIST",
        help=f"Hiera blocks with dropout (default: {default_text(PRUNING_DEFAULTS, 'uncertainty_blocks')})",
    )
    parser.add_argument(
        "--prior-dilation",
        type=int,
        metavar="TOKENS",
        help=f"dilation of the prior mask in tokens (default: {default_text(PRUNING_DEFAULTS, 'prior_dilation')})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help=f"seed of initialisation, shuffling and dropout (default: {default_text(PRUNING_DEFAULTS, 'seed')})",
    )
    add_model_options(parser)


def handle(args: argparse.Namespace) -> int:
    try:
        pruning = PruningConfig(scorer="prior", **given_fields(args, SIGNAL_FIELDS))
    except ValueError as error:
        raise option_error("router options", error) from error
    train_router(
        data=data_selection(args),
        out=args.out,
        router=args.router,
        labels=args.labels,
        aligner=args.aligner,
        signals=args.signals,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        loss=args.loss,
        holdout_every=args.holdout_every,
        pruning=pruning,
        model=model_options(args),
        overwrite=args.overwrite,
    )
    return 0


COMMAND = Command(
    run=train_router,
    add_arguments=add_arguments,
    handle=handle,
    help="train the paper/learned router on a dataset with masks",
    description=(
        "Trains the router MLP: per token, the target is the fraction of its patch inside the dilated ground-truth "
        "mask; signals as the tracker computes them (prior from the previous annotated frame). Frames whose index "
        "is divisible by --holdout-every are held out; reports their recall of object tokens at --retention."
    ),
    examples=(
        "sam2prune train-router --root DAVIS --labels labels.json --aligner aligner.pt --out router.pt --checkpoint sam2.1_hiera_tiny.pt",
    ),
)
