"""``sam2prune report``: one Table-1-style markdown table across evaluation runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sam2prune.cli.common import Command, add_overwrite_option, path_argument
from sam2prune.errors import InputError


def report(*, runs: Sequence[Path], out: Path | None = None, plot: Path | None = None, overwrite: bool = False) -> str:
    """Tabulate the report.json of each run folder (``eval`` or ``sweep``); print the table and
    return it, also writing it to ``out`` and J&F and FPS against retention to ``plot`` (neither
    inside a run folder; existing files replaced only with ``overwrite``)."""
    from sam2prune.evaluation.report import load_reports, markdown_report, plot_tradeoff
    from sam2prune.fsutil import atomic_write_text, check_output_files

    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"--plot {plot}: the plot is a PNG image; name it FILE.png")
    inputs = [("RUN_DIR", run) for run in runs]
    check_output_files([("--out", out), ("--plot", plot)], inputs=inputs, overwrite=overwrite)
    reports = load_reports(list(runs))
    text = markdown_report(reports)
    if out is not None:
        atomic_write_text(out, text)
    print(text, end="")
    if plot is not None:
        plot_tradeoff(plot, reports)
        print(f"plot: {plot}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", type=path_argument, metavar="RUN_DIR", help="folders written by `sam2prune eval`"
    )
    parser.add_argument("--out", type=path_argument, metavar="FILE.md", help="also write the table here")
    parser.add_argument("--plot", type=path_argument, metavar="FILE.png", help="J&F and FPS against retention")
    add_overwrite_option(parser, "--out or --plot file")


def handle(args: argparse.Namespace) -> int:
    report(runs=args.runs, out=args.out, plot=args.plot, overwrite=args.overwrite)
    return 0


COMMAND = Command(
    run=report,
    add_arguments=add_arguments,
    handle=handle,
    help="Table-1-style markdown across evaluation runs",
    description=(
        "Reads report.json of each run folder written by `sam2prune eval` or `sweep` and prints one markdown "
        "table: per dataset and method J, F, J&F (fractions, as the official CSVs), frames per second, peak "
        "memory, memory-bank KiB per frame, kept-token fraction, refinement rounds and clicks; then J&F by "
        "method and dataset."
    ),
    examples=("sam2prune report runs/davis_sam2 runs/davis_r0.3 --out table1.md --plot tradeoff.png",),
)
