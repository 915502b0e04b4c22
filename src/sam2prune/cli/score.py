"""``sam2prune score``: J&F of a results folder against DAVIS-layout ground truth."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sam2prune.cli.common import Command, default_of, path_argument, unique_names
from sam2prune.errors import InputError
from sam2prune.wording import counted


def score(
    *,
    gt_root: Path,
    results: Path,
    set_name: str = "val",
    sequences: Sequence[str] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Score ``results/<seq>/<frame>.png`` as the official semi-supervised DAVIS evaluation does;
    write the official CSVs and summary.json into ``out`` (default: ``results``), print the
    global measures and return them.

    Args:
        set_name: ``gt_root/ImageSets/2017/<set_name>.txt`` lists the sequences; it also names
            the CSV files.
        sequences: score only these sequences instead.
        overwrite: replace those files where they exist (an eval run folder holds them too).

    Raises:
        InputError: a folder is missing, ``results`` is an ``eval`` run folder (its masks are in
            ``masks/``), ``out`` lies inside ``gt_root``, or (without ``overwrite``) it holds
            the files already.
    """
    from sam2prune.evaluation.davis import (
        GLOBAL_COLUMNS,
        official_csv_names,
        read_sequence_list,
        score_results,
        write_official_csvs,
    )
    from sam2prune.fsutil import check_output_location, check_writable_folder, is_within, make_output_dir

    if not results.is_dir():
        raise InputError(f"--results {results}: folder does not exist")
    if not gt_root.is_dir():
        raise InputError(f"--gt-root {gt_root}: folder does not exist")
    if sequences:
        annotations = gt_root / "Annotations" / "480p"
        missing = [name for name in sequences if not (annotations / name).is_dir()]
        if missing:
            raise InputError(f"--sequences: {', '.join(missing)} not in {annotations}")
    names = list(unique_names(sequences) or ()) or read_sequence_list(gt_root, set_name)
    masks = results / "masks"
    if (results / "run.json").is_file() and any(
        not (results / name).is_dir() and (masks / name).is_dir() for name in names
    ):
        raise InputError(
            f"--results {results} is the folder of an `eval` run (run.json), whose masks are in {masks}/<sequence>/: "
            f"did you mean --results {masks}?"
        )
    out_dir = out if out is not None else results
    option = f"--out {out_dir}" if out is not None else f"the results folder {results} (the default --out)"
    if is_within(out_dir.resolve(), gt_root.resolve()):
        raise InputError(f"{option} lies inside --gt-root {gt_root}: name an --out folder outside the ground truth")
    taken = [name for name in official_csv_names(set_name) if (out_dir / name).exists()]
    if taken and not overwrite:
        raise InputError(f"{option} holds {', '.join(taken)} already; pass --overwrite to replace them")
    if out_dir.is_dir():
        check_writable_folder(out_dir, option=f"--out {out_dir}")
    else:
        check_output_location(out_dir)
    measures, scores = score_results(gt_root, results, set_name=set_name, sequences=names)
    make_output_dir(out_dir)
    write_official_csvs(out_dir, set_name, measures, scores)
    print("| " + " | ".join(GLOBAL_COLUMNS) + " |")
    print("|" + "---|" * len(GLOBAL_COLUMNS))
    print("| " + " | ".join(f"{measures[k]:.3f}" for k in GLOBAL_COLUMNS) + " |")
    print(f"{counted(len(scores), 'object')}; CSV files and summary.json in {out_dir}")
    return measures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gt-root",
        type=path_argument,
        required=True,
        metavar="ROOT",
        help="DAVIS layout: ROOT/Annotations/480p/<seq>/*.png",
    )
    parser.add_argument(
        "--results",
        type=path_argument,
        required=True,
        metavar="DIR",
        help="results: DIR/<seq>/<frame>.png (an `eval` run's are in RUN/masks)",
    )
    parser.add_argument(
        "--set",
        "--split",
        dest="set",
        default=default_of(score, "set_name"),
        help="ROOT/ImageSets/2017/<set>.txt lists the sequences; also names the CSV files (--split, as `eval` "
        "calls it, is the same) (default: %(default)s)",
    )
    parser.add_argument(
        "--sequences",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="score only these sequences (e.g. those of an `eval --limit` run; repeatable)",
    )
    parser.add_argument(
        "--out",
        type=path_argument,
        metavar="DIR",
        help="where the CSV files go, created if needed (default: the results folder)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the CSV files and summary.json where --out holds them"
    )


def handle(args: argparse.Namespace) -> int:
    score(
        gt_root=args.gt_root,
        results=args.results,
        set_name=args.set,
        sequences=args.sequences,
        out=args.out,
        overwrite=args.overwrite,
    )
    return 0


COMMAND = Command(
    run=score,
    add_arguments=add_arguments,
    handle=handle,
    help="J&F of a results folder against DAVIS-layout ground truth",
    description=(
        "Semi-supervised DAVIS 2017 scoring, reproducing the official evaluation: J (IoU) and F (boundary "
        "F-measure) per object and frame, first and last frames excluded, objects missing from the results "
        "count as empty. Writes global_results-<set>.csv and per-sequence_results-<set>.csv (as the official "
        "tool; J&F as a fraction) and summary.json (full precision). Works for any method's palette-PNG results."
    ),
    examples=(
        "sam2prune score --gt-root DAVIS --results runs/davis_r0.3/masks --out scores/",
        "sam2prune score --gt-root DAVIS --results runs/two/masks --sequences bike-packing blackswan",
    ),
)
