"""Plot memory against video length from one or more ``sam2prune bench --lengths --json`` files
(runs split over several commands, e.g. methods measured at different lengths), as ``--plot``
draws one file.

    .venv/bin/python benchmarks/plot_lengths.py OUT.png A.json [B.json ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sam2prune.memory_bench import LengthResult, plot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("results", type=Path, nargs="+", help="bench --lengths JSON files")
    args = parser.parse_args()
    reports = [json.loads(path.read_text()) for path in args.results]
    results = [LengthResult(**entry) for report in reports for entry in report["memory_vs_length"]]
    first = reports[0]
    title = f"{first['model']} at {first['image_size']} px, {first['device']}, one object"
    title += f"; pruned r={first['pruning']['retention']:g}" + (", RANDOM weights" if first["random_weights"] else "")
    plot(args.out, results, title=title)


if __name__ == "__main__":
    main()
