"""``sam2prune eval``: the interactive protocol on a dataset, scored; ``run_eval`` is one run,
which ``sweep`` repeats."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.cli.common import (
    AutoTextOptions,
    Command,
    DataSelection,
    MemoryOptions,
    ModelOptions,
    Weights,
    add_auto_text_options,
    add_data_options,
    add_memory_options,
    add_model_options,
    add_protocol_options,
    add_pruning_options,
    auto_text_hook,
    auto_text_options,
    auto_text_pipeline,
    build,
    check_run_folder,
    data_selection,
    log,
    memory_options,
    model_options,
    protocol_config,
    pruning_configs,
    refuse_auto_text_options_without_switch,
    refuse_pruning_options_for_sam2,
    resolve_weights,
    select_sequences,
)
from sam2prune.config import ProtocolConfig, PruningConfig

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence as DatasetSequence
    from sam2prune.predictor import SAM2Predictor


def run_eval(
    *,
    predictor: SAM2Predictor,
    pruning: PruningConfig | None,
    protocol: ProtocolConfig,
    data: DataSelection,
    sequences: Sequence[DatasetSequence],
    model: ModelOptions,
    weights: Weights,
    out: Path,
    overwrite: bool = False,
    auto_text: AutoTextOptions = AutoTextOptions(),
    memory: MemoryOptions = MemoryOptions(),
) -> dict[str, Any]:
    """One run of the protocol into ``out`` (resumed if it holds the same run): masks, records,
    the official CSVs and report.json, which it returns.

    Args:
        predictor: built from ``model`` and ``weights``, pruned with ``pruning`` (None: unpruned).
        sequences: selected from ``data``, which the run's settings name.
        memory: bounded tracking state (the default) or everything kept.
    """
    import torch

    from sam2prune.data.datasets import DEFAULT_SPLITS
    from sam2prune.evaluation.protocol import (
        EvalSettings,
        evaluate_sequences,
        prepare_run_dir,
        protocol_prompts,
        summarize,
    )

    settings = EvalSettings(
        dataset=data.dataset,
        root=str(data.root.resolve()),
        split=data.split or DEFAULT_SPLITS[data.dataset],
        method="sam2" if pruning is None else "pruned",
        model=model.model,
        checkpoint=str(weights.checkpoint) if weights.checkpoint is not None else None,
        image_size=predictor.image_size,
        device=str(predictor.device),
        pruning=pruning,
        protocol=protocol,
        bounded_memory=not memory.unbounded_memory,
    )
    prepare_run_dir(out, settings, overwrite=overwrite)
    done = [s.name for s in sequences if (out / "sequences" / f"{s.name}.json").is_file()]
    if done:
        log.info("resuming %s: %d of %d sequences already done", out, len(done), len(sequences))
    on_prompted_for = None
    if pruning is not None and pruning.auto_text:
        pipeline = auto_text_pipeline(auto_text, device=model.device, command="eval")

        def on_prompted_for(sequence):
            # the region of each object is the box of SAM 2's mask for the protocol's click
            return auto_text_hook(pipeline, sequence.source, protocol_prompts(sequence))

    records = evaluate_sequences(
        predictor,
        list(sequences),
        out,
        protocol=protocol,
        device=torch.device(predictor.device),
        on_prompted_for=on_prompted_for,
        bounded_memory=settings.bounded_memory,
    )
    return summarize(records, settings, out)


def evaluate(
    *,
    data: DataSelection,
    out: Path,
    pruning: PruningConfig | None = PruningConfig(),
    protocol: ProtocolConfig = ProtocolConfig(),
    model: ModelOptions = ModelOptions(),
    auto_text: AutoTextOptions = AutoTextOptions(),
    overwrite: bool = False,
    memory: MemoryOptions = MemoryOptions(),
) -> dict[str, Any]:
    """Run the interactive protocol on a dataset with one predictor and score it; print the
    overall results and return the run's report.

    Args:
        out: the run folder; an interrupted run there resumes (same settings).
        pruning: None: the unpruned official predictor.
        auto_text: how objects are described when ``pruning.auto_text`` is on.
        overwrite: start over in ``out`` (deletes the run there).
        memory: bounded tracking state (the default) or everything kept.
    """
    check_run_folder(out, root=data.root)
    weights = resolve_weights(model, required=True)
    sequences = select_sequences(data)
    predictor = build(model, weights, pruning)
    report = run_eval(
        predictor=predictor,
        pruning=pruning,
        protocol=protocol,
        data=data,
        sequences=sequences,
        model=model,
        weights=weights,
        out=out,
        overwrite=overwrite,
        auto_text=auto_text,
        memory=memory,
    )
    overall = report["overall"]
    print(
        f"J&F {overall['J&F-Mean']:.3f}  J {overall['J-Mean']:.3f}  F {overall['F-Mean']:.3f}  "
        f"{overall['fps']:.2f} frames/s  peak memory {overall['peak_memory_mib']:.0f} MiB  "
        f"kept {overall['kept_fraction']:.2f}  refinement rounds {overall['refinement_rounds']}, clicks {overall['clicks']}  "
        f"({overall['sequences']} sequences, {overall['objects']} objects) -> {out}"
    )
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sam2prune.data import datasets

    parser.description += "\n\nDataset layouts:\n" + datasets.__doc__.split("ROOT is what ``--root`` points to):", 1)[
        1
    ].replace("``", "")
    add_data_options(parser)
    add_protocol_options(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="run folder (resumed if it holds this run)"
    )
    parser.add_argument("--overwrite", action="store_true", help="start over in --out (deletes the run there)")
    parser.add_argument(
        "--method",
        choices=("pruned", "sam2"),
        default="pruned",
        help="pruned = token-pruned predictor; sam2 = the unpruned official predictor (default: %(default)s)",
    )
    add_model_options(parser)
    add_pruning_options(parser)
    add_auto_text_options(parser)
    add_memory_options(parser)


def handle(args: argparse.Namespace) -> int:
    if args.method == "sam2":
        refuse_pruning_options_for_sam2(args)
    refuse_auto_text_options_without_switch(args)
    evaluate(
        data=data_selection(args),
        out=args.out,
        pruning=pruning_configs(args)[0] if args.method == "pruned" else None,
        protocol=protocol_config(args),
        model=model_options(args),
        auto_text=auto_text_options(args),
        overwrite=args.overwrite,
        memory=memory_options(args),
    )
    return 0


COMMAND = Command(
    run=evaluate,
    add_arguments=add_arguments,
    handle=handle,
    help="run the interactive protocol on a dataset and score it",
    description=(
        "Protocol: one positive click per object on the first frame it appears on, at the maximum of the "
        "distance transform of its mask; tracking (each object from the frame it is prompted on); then, while "
        "some frame's J&F for an object is below --refine-below, up to --clicks-per-round corrective clicks on "
        "the worst frame (positive in the largest false-negative region, negative in the largest false-positive "
        "region, at their distance-transform maxima) and tracking again from it, at most --max-rounds rounds per "
        "sequence. Writes masks/<seq>/*.png, sequences/<seq>.json, the official CSVs and report.json into --out. "
        "An interrupted run resumes where it stopped (same --out, same settings). DAVIS is scored exactly as the "
        "official tool; other datasets per object over the annotated frames after its prompt frame."
    ),
    examples=(
        "sam2prune eval --dataset davis --root DAVIS --retention 0.3 --checkpoint sam2.1_hiera_tiny.pt --out runs/davis_r0.3",
    ),
)
