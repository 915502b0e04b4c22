"""``sam2prune eval``: the interactive protocol on a dataset, scored; ``run_eval`` is one run,
which ``sweep`` repeats."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2prune.cli.common import (
    RANDOM_WEIGHTS_SEED,
    AutoTextOptions,
    Command,
    DataSelection,
    GpuOptions,
    MemoryOptions,
    ModelOptions,
    Weights,
    add_auto_text_options,
    add_data_options,
    add_gpu_options,
    add_memory_options,
    add_model_options,
    add_protocol_options,
    add_pruning_options,
    add_ray_options,
    auto_text_hook,
    auto_text_options,
    auto_text_pipeline,
    build,
    check_gpu_options,
    check_run_folder,
    data_selection,
    gpu_options,
    layouts_text,
    log,
    memory_options,
    model_options,
    path_argument,
    protocol_config,
    pruning_configs,
    ray_config,
    refuse_auto_text_options_without_switch,
    refuse_pruning_options_for_sam2,
    resolve_device,
    resolve_weights,
    say_weights,
    select_sequences,
)
from sam2prune.config import ProtocolConfig, PruningConfig, RayConfig
from sam2prune.errors import InputError, SequencesFailed, UserError, WorkerFailed
from sam2prune.wording import counted

if TYPE_CHECKING:
    from sam2prune.data.datasets import Sequence as DatasetSequence
    from sam2prune.evaluation.protocol import EvalSettings
    from sam2prune.predictor import SAM2Predictor


def prepare_run(out: Path, settings: EvalSettings, *, sequences: Sequence[DatasetSequence], overwrite: bool) -> None:
    """Make or check the folder of a run of ``settings`` (``run_settings``: its ``run.json``; a
    serial and a Ray run of the same settings write the same one, so either resumes the other),
    and say what is resumed.

    Raises:
        InputError: ``out`` holds something else, or a run with other settings.
    """
    from sam2prune.evaluation.protocol import prepare_run_dir, record_path

    pending = overwrite or any(not record_path(out, sequence.name).is_file() for sequence in sequences)
    prepare_run_dir(out, settings, overwrite=overwrite, pending=pending)
    _say_resuming(out, sequences)


def run_settings(
    *,
    pruning: PruningConfig | None,
    protocol: ProtocolConfig,
    data: DataSelection,
    model: ModelOptions,
    weights: Weights,
    image_size: int,
    device: str,
    memory: MemoryOptions,
    gpu: GpuOptions = GpuOptions(),
) -> EvalSettings:
    """What a run's ``run.json`` holds (and a run resumed in its folder must have)."""
    from sam2prune.data.datasets import DEFAULT_SPLITS
    from sam2prune.evaluation.protocol import EvalSettings

    return EvalSettings(
        dataset=data.dataset,
        root=str(data.root.resolve()),
        split=data.split or DEFAULT_SPLITS[data.dataset],
        method="sam2" if pruning is None else "pruned",
        model=model.model,
        # resolved: the same file named another way is the same run
        checkpoint=str(Path(weights.checkpoint).resolve()) if weights.checkpoint is not None else None,
        image_size=image_size,
        device=device,
        pruning=_absolute_files(pruning),  # resolved, as the checkpoint
        protocol=protocol,
        bounded_memory=not memory.unbounded_memory,
        bf16=gpu.bf16,
        static_step=gpu.static_step if pruning is not None else "off",
    )


def check_run_before_building(
    out: Path,
    *,
    pruning: PruningConfig | None,
    protocol: ProtocolConfig,
    data: DataSelection,
    model: ModelOptions,
    weights: Weights,
    memory: MemoryOptions,
    gpu: GpuOptions,
    overwrite: bool,
) -> None:
    """Refuse a run folder before the model is built (seconds to a minute for a large
    checkpoint), as preparing it would (``check_run_folder_for``), with the run's settings as the
    model will report them.

    Raises:
        InputError: ``out`` holds something else, a run with other settings (naming what
            differs), or, with ``overwrite``, files of the user's where the run writes.
    """
    from sam2prune.evaluation.protocol import check_run_folder_for
    from sam2prune.models import device_label, model_input_size

    settings = run_settings(
        pruning=pruning,
        protocol=protocol,
        data=data,
        model=model,
        weights=weights,
        image_size=model_input_size(model.model, model.image_size),
        device=device_label(resolve_device(model.device)),
        memory=memory,
        gpu=gpu,
    )
    check_run_folder_for(out, settings, overwrite=overwrite)


def _say_resuming(out: Path, sequences: Sequence[DatasetSequence]) -> None:
    from sam2prune.evaluation.protocol import record_path

    done = [s.name for s in sequences if record_path(out, s.name).is_file()]
    if done:
        log.info("resuming %s: %d of %d sequences already done", out, len(done), len(sequences))


def _say_coverage(out: Path, sequences: Sequence[DatasetSequence], data: DataSelection) -> None:
    """Say so when the report of ``out`` covers fewer sequences than are done there: a run
    resumed with a narrower ``--sequences`` or ``--limit`` reports the sequences it selects."""
    from sam2prune.fsutil import is_temporary

    records = (out / "sequences").glob("*.json")
    done = {path.name.removesuffix(".json") for path in records if not is_temporary(path)}
    selected = {sequence.name for sequence in sequences}
    if not done - selected:
        return
    options = [option for option, given in (("--sequences", data.sequences), ("--limit", data.limit)) if given]
    narrowed = " and ".join(options)
    log.warning(
        "the report covers %d of the %s done in %s %s",
        len(selected),
        counted(len(done | selected), "sequence"),
        out,
        f"({narrowed}); run without {narrowed} for all" if narrowed else "(those the dataset lists now)",
    )


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
    gpu: GpuOptions = GpuOptions(),
) -> dict[str, Any]:
    """One run of the protocol into ``out`` (resumed if it holds the same run): masks, records,
    the official CSVs and report.json, which it returns.

    Args:
        predictor: built from ``model`` and ``weights``, pruned with ``pruning`` (None: unpruned).
        sequences: selected from ``data``, which the run's settings name.
        memory: bounded tracking state (the default) or everything kept.
        gpu: bf16 autocast, and (a pruned predictor) how steady-state frames run.
    """
    import torch

    from sam2prune.evaluation.protocol import check_sequences, evaluate_sequences, protocol_prompts, summarize

    check_sequences(sequences)  # done before the model was built where the caller did
    settings = run_settings(
        pruning=pruning,
        protocol=protocol,
        data=data,
        model=model,
        weights=weights,
        image_size=predictor.image_size,
        device=str(predictor.device),
        memory=memory,
        gpu=gpu,
    )
    prepare_run(out, settings, sequences=sequences, overwrite=overwrite)
    if pruning is not None:
        predictor.set_static_step(settings.static_step)
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
        bf16=settings.bf16,
    )
    report = summarize(records, settings, out)
    _say_coverage(out, sequences, data)
    return report


# one run of a batch on Ray: (pruning or None for unpruned SAM 2, run folder, label for messages)
RayRun = tuple[PruningConfig | None, Path, str]


def check_ray_runs(*, prunings: Sequence[PruningConfig | None]) -> None:
    """Refuse, before anything heavy, what a run on Ray cannot do, and a file a setting names
    that does not exist (the workers load the files; a sweep's later setting would only fail
    once the settings before it had run).

    Raises:
        InputError: Ray is not installed (naming the extra), automatic texts are asked for, or
            a router-weights or aligner file is missing.
    """
    from sam2prune.evaluation.distributed import import_ray

    import_ray()
    if any(pruning is not None and pruning.auto_text for pruning in prunings):
        raise InputError("--auto-text does not run on Ray workers yet; run without --workers and --ray-address")
    for pruning in prunings:
        if pruning is None:
            continue
        for option, name in (("--router-weights", pruning.router_weights), ("--aligner", pruning.aligner)):
            if name is not None and not Path(name).is_file():
                raise InputError(f"{option} {name}: {'is a folder' if Path(name).is_dir() else 'file does not exist'}")


def run_evals_on_ray(
    *,
    runs: Sequence[RayRun],
    protocol: ProtocolConfig,
    data: DataSelection,
    sequences: Sequence[DatasetSequence],
    model: ModelOptions,
    weights: Weights,
    cluster: RayConfig,
    overwrite: bool = False,
    memory: MemoryOptions = MemoryOptions(),
    gpu: GpuOptions = GpuOptions(),
    stale: Sequence[Path] = (),
) -> list[dict[str, Any]]:
    """Runs of the protocol on Ray workers, one task per run and sequence, into the same run
    folders (and files) a serial ``run_eval`` writes; each resumes a serial or Ray run of the same
    settings. Returns the report of each run, in order.

    Args:
        stale: files to remove once every run folder is checked (a sweep's last table).

    Raises:
        SequencesFailed: some sequences failed on every attempt; the others are saved, and the
            runs they complete are reported (report.json) before this is raised.
    """
    from sam2prune.evaluation.distributed import RunSpec, WorkerModel, connect
    from sam2prune.evaluation.protocol import check_run_folder_for, check_sequences, discard_unstarted_run, summarize
    from sam2prune.models import model_input_size, read_checkpoint, resolve_config

    check_sequences(sequences)  # before Ray is joined (done once, where the caller did)
    image_size = model_input_size(model.model, model.image_size)
    say_weights(model, weights)
    # read before Ray is joined and a run folder prepared (--overwrite deletes a run there), as a
    # serial run builds its model first; shipped to the workers once
    state_dict = read_checkpoint(weights.checkpoint, model=model.model) if weights.checkpoint is not None else None
    with connect(cluster, device=model.device) as ray_cluster:
        check_gpu_options(gpu, ray_cluster.device, pruned=any(pruning is not None for pruning, _, _ in runs))
        all_settings = [
            run_settings(
                pruning=pruning,
                protocol=protocol,
                data=data,
                model=model,
                weights=weights,
                image_size=image_size,
                device=ray_cluster.device_label,
                memory=memory,
                gpu=gpu,
            )
            for pruning, _, _ in runs
        ]
        # every run folder checked before one is prepared (--overwrite deletes a run there)
        for (_, out, _), settings in zip(runs, all_settings, strict=True):
            check_run_folder_for(out, settings, overwrite=overwrite)
        for path in stale:
            path.unlink(missing_ok=True)
        # the runs this command starts: removed again if the workers cannot set up (a serial run
        # builds its model before it makes its folder)
        new_runs = [(out, not out.exists()) for _, out, _ in runs if overwrite or not (out / "run.json").is_file()]
        for (_, out, _), settings in zip(runs, all_settings, strict=True):
            prepare_run(out, settings, sequences=sequences, overwrite=overwrite)
        # workers may run elsewhere, in another folder: the files they read by absolute path (as
        # the settings record them), the model under the name a serial run gives it
        specs = [
            RunSpec(out.resolve(), settings.pruning, label)
            for (_, out, label), settings in zip(runs, all_settings, strict=True)
        ]
        official, yaml_path = resolve_config(model.model)
        worker_model = WorkerModel(
            model=official.name if official is not None else str(yaml_path),
            model_file=None if official is not None else str(yaml_path.resolve()),
            image_size=model.image_size,
            device=ray_cluster.device,
            seed=RANDOM_WEIGHTS_SEED,
            bounded_memory=not memory.unbounded_memory,
            bf16=gpu.bf16,
            static_step=gpu.static_step,
        )
        try:
            result = ray_cluster.evaluate(
                specs,
                list(sequences),
                model=worker_model,
                checkpoint=weights.checkpoint,
                protocol=protocol,
                state_dict=state_dict,
            )
        except (UserError, WorkerFailed):
            for out, made in new_runs:
                discard_unstarted_run(out, made_folder=made)
            raise
    reports = []
    for index, (spec, settings) in enumerate(zip(specs, all_settings, strict=True)):
        if result.complete(index, len(sequences)):
            reports.append(summarize(result.records[index], settings, spec.out_dir))
            _say_coverage(spec.out_dir, sequences, data)
    if result.failures:
        total = len(runs) * len(sequences)
        raise SequencesFailed(
            f"{len(result.failures)} of {counted(total, 'sequence')} failed ({counted(cluster.max_retries + 1, 'attempt')} "
            "each); the "
            "others are saved, and the same command again runs only what is missing:\n"
            + "\n".join(f"  {failure}" for failure in result.failures)
        )
    return reports


def _absolute_files(pruning: PruningConfig | None) -> PruningConfig | None:
    """``pruning`` with its router-weights and aligner files named by absolute path."""
    if pruning is None:
        return None

    def absolute(name: str | None) -> str | None:
        return None if name is None else str(Path(name).resolve())

    return replace(pruning, router_weights=absolute(pruning.router_weights), aligner=absolute(pruning.aligner))


def evaluate(
    *,
    data: DataSelection,
    out: Path,
    pruning: PruningConfig | None = PruningConfig(),
    protocol: ProtocolConfig = ProtocolConfig(),
    model: ModelOptions = ModelOptions(),
    auto_text: AutoTextOptions = AutoTextOptions(),
    cluster: RayConfig = RayConfig(),
    overwrite: bool = False,
    memory: MemoryOptions = MemoryOptions(),
    gpu: GpuOptions = GpuOptions(),
) -> dict[str, Any]:
    """Run the interactive protocol on a dataset and score it, with one predictor in this
    process or on Ray workers (``cluster``); print the overall results and return the run's
    report.

    Args:
        out: the run folder; an interrupted run there resumes (same settings), also a serial
            run on Ray and the other way round.
        pruning: None: the unpruned official predictor.
        auto_text: how objects are described when ``pruning.auto_text`` is on.
        cluster: the Ray workers (``RayConfig.enabled``); else one process.
        overwrite: start over in ``out`` (deletes what the run wrote there).
        memory: bounded tracking state (the default) or everything kept.
        gpu: bf16 autocast, and how the pruned predictor runs steady-state frames.

    Raises:
        SequencesFailed: on Ray, some sequences failed on every attempt (the others are saved).
    """
    from sam2prune.evaluation.protocol import check_run_dir, check_sequences

    check_run_folder(out, root=data.root)
    check_run_dir(out)  # before Ray is joined or the model built
    if cluster.enabled:  # the GPU options are checked once the cluster says which device its workers have
        check_ray_runs(prunings=[pruning])
    else:
        check_gpu_options(gpu, resolve_device(model.device), pruned=pruning is not None)
    weights = resolve_weights(model, required=True)
    if cluster.enabled:
        # workers may run elsewhere: absolute paths (the same on every node of a shared filesystem)
        data = replace(data, root=data.root.resolve())
        sequences = select_sequences(data)
        (report,) = run_evals_on_ray(
            runs=[(pruning, out, "")],
            protocol=protocol,
            data=data,
            sequences=sequences,
            model=model,
            weights=weights,
            cluster=cluster,
            overwrite=overwrite,
            memory=memory,
            gpu=gpu,
        )
    else:
        sequences = select_sequences(data)
        check_sequences(sequences)  # every sequence's annotations, before the model is built
        check_run_before_building(
            out,
            pruning=pruning,
            protocol=protocol,
            data=data,
            model=model,
            weights=weights,
            memory=memory,
            gpu=gpu,
            overwrite=overwrite,
        )
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
            gpu=gpu,
        )
    overall = report["overall"]
    print(
        f"J&F {overall['J&F-Mean']:.3f}  J {overall['J-Mean']:.3f}  F {overall['F-Mean']:.3f}  "
        f"{overall['fps']:.2f} frames/s  peak memory {overall['peak_memory_mib']:.0f} MiB  "
        f"kept {overall['kept_fraction']:.2f}  refinement rounds {overall['refinement_rounds']}, clicks {overall['clicks']}  "
        f"({counted(overall['sequences'], 'sequence')}, {counted(overall['objects'], 'object')}) -> {out}"
    )
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser)
    add_protocol_options(parser)
    parser.add_argument(
        "--out", type=path_argument, required=True, metavar="DIR", help="run folder (resumed if it holds this run)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in --out (deletes what the run wrote there, not other files; a folder holding no run "
        "is never deleted)",
    )
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
    add_gpu_options(parser)
    add_ray_options(parser)


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
        cluster=ray_config(args),
        overwrite=args.overwrite,
        memory=memory_options(args),
        gpu=gpu_options(args),
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
        "official tool; other datasets per object over the annotated frames after its prompt frame.\n\n"
        "With --workers N or --ray-address the sequences run on Ray workers (one model each, N at a time), into the "
        "same run folder: the same masks and scores as one process; a sequence that fails is tried again "
        "(--max-retries), then reported by name while the others finish, and the exit status is 1."
    ),
    epilog=layouts_text(),
    examples=(
        "sam2prune eval --dataset davis --root DAVIS --retention 0.3 --checkpoint sam2.1_hiera_tiny.pt --out runs/davis_r0.3",
        "sam2prune eval --dataset lvos --root LVOS --checkpoint sam2.1_hiera_tiny.pt --out runs/lvos --workers 4",
        "sam2prune eval --dataset lvos --root /shared/LVOS --checkpoint sam2.1_hiera_tiny.pt --out /shared/runs/lvos "
        "--ray-address HEAD_IP:6379",
    ),
)
