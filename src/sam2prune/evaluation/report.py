"""Tables and plots across evaluation runs (each a folder with ``report.json``)."""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any

from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write, read_json
from sam2prune.wording import counted


def load_reports(run_dirs: list[Path]) -> list[dict]:
    """Read ``report.json`` of each run folder.

    Raises:
        InputError: naming a folder without a finished run.
    """
    reports: list[dict] = []
    named: set[Path] = set()
    for run_dir in run_dirs:
        if run_dir.resolve() in named:  # a folder named twice is one run
            continue
        named.add(run_dir.resolve())
        path = run_dir / "report.json"
        if not run_dir.exists():
            raise InputError(
                f"{run_dir}: folder does not exist; expected a run folder written by `sam2prune eval` or `sweep`"
            )
        if run_dir.is_file():
            raise InputError(f"{run_dir} is a file; expected a run folder written by `sam2prune eval` or `sweep`")
        if not path.is_file():
            inner = sorted(p.parent for p in run_dir.glob("*/report.json")) if run_dir.is_dir() else []
            if (run_dir / "run.json").is_file():
                done = len(list((run_dir / "sequences").glob("*.json")))
                raise InputError(
                    f"{run_dir} holds an unfinished run ({counted(done, 'sequence')} done, no report.json yet): run "
                    "the same `sam2prune eval` command again to finish it"
                )
            hint = (
                f"; it holds runs ({', '.join(p.name for p in inner)}): pass them, e.g. {shlex.quote(str(run_dir))}/*/"
                if inner
                else "; run `sam2prune eval` first"
            )
            raise InputError(f"{run_dir} holds no finished evaluation run (no report.json){hint}")
        report = read_json(path, what="run report")
        _check_report(report, path)
        report["run_dir"] = str(run_dir)
        reports.append(report)
    return reports


# what a report.json must hold for the tables and the plot
REPORT_SETTINGS = ("dataset", "method", "model", "checkpoint")
REPORT_OVERALL = (
    "J&F-Mean",
    "J-Mean",
    "F-Mean",
    "fps",
    "peak_memory_mib",
    "memory_kind",
    "memory_bank_bytes_per_frame",
    "kept_fraction",
    "refinement_rounds",
    "clicks",
)


def _check_report(report: object, path: Path) -> None:
    """Raises InputError unless ``report`` (read from ``path``) holds what a run's report holds."""
    if not isinstance(report, dict) or not isinstance(report.get("settings"), dict):
        raise InputError(f"{path} is not a report of `sam2prune eval` (no settings)")
    overall = report.get("overall")
    missing = [f"settings.{key}" for key in REPORT_SETTINGS if key not in report["settings"]]
    missing += [f"overall.{key}" for key in REPORT_OVERALL if not isinstance(overall, dict) or key not in overall]
    pruning = report["settings"].get("pruning")
    if report["settings"].get("method") == "pruned":
        pruning = pruning if isinstance(pruning, dict) else {}
        needed = ["retention", "scorer"] + (["router"] if pruning.get("scorer") == "router" else [])
        needed += ["mc_passes"] if pruning.get("scorer") == "router" and pruning.get("uncertainty") == "mc" else []
        missing += [f"settings.pruning.{key}" for key in needed if key not in pruning]
    if missing:
        raise InputError(
            f"{path} lacks {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}: not a report of this "
            "version of `sam2prune eval`, or edited"
        )
    assert isinstance(overall, dict)  # else every key is missing
    not_numbers = [
        f"overall.{key} ({json.dumps(overall[key])})"
        for key in REPORT_OVERALL
        if key != "memory_kind" and (isinstance(overall[key], bool) or not isinstance(overall[key], int | float))
    ]
    if not_numbers:
        raise InputError(f"{path}: {', '.join(not_numbers)} should be a number: edited, or damaged")
    settings = report["settings"]
    wrong = [(f"settings.{key}", settings[key], "a string") for key in ("dataset", "method", "model")]
    wrong.append(("settings.checkpoint", settings["checkpoint"], "a string or null"))
    if settings["method"] == "pruned":
        wrong += [
            (f"settings.pruning.{key}", pruning[key], expected) for key, expected in PRUNING_FIELDS if key in pruning
        ]
    for field, value, expected in wrong:
        if not _is(value, expected):
            raise InputError(f"{path}: {field} ({json.dumps(value)}) should be {expected}: edited, or damaged")


# the settings.pruning fields the tables read, and what each holds
PRUNING_FIELDS = (
    ("retention", "a number"),
    ("scorer", "a string"),
    ("router", "a string"),
    ("uncertainty", "a string or null"),
    ("mc_passes", "a whole number or null"),
    ("signals", "a list of strings or null"),
)


def _is(value: object, expected: str) -> bool:
    """Whether a JSON value is what ``expected`` (a PRUNING_FIELDS-style wording) says."""
    if value is None:
        return expected.endswith("or null")
    if expected.startswith("a number"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected.startswith("a whole number"):
        return isinstance(value, int) and not isinstance(value, bool)
    if expected.startswith("a list of strings"):
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, str)


def method_label(settings: dict) -> str:
    if settings["method"] == "sam2" or settings.get("pruning") is None:
        return f"SAM 2 ({settings['model']})"
    pruning = settings["pruning"]
    conditioning = ", cond. pruned" if pruning.get("prune_conditioning_frames") else ""
    scorer = pruning["scorer"]
    if scorer == "router":
        signals = pruning.get("signals") or ["auto"]
        scorer = f"router {pruning['router']} [{'+'.join(signals)}]"
        if pruning.get("uncertainty") == "mc":
            scorer += f" MC T={pruning['mc_passes']}"
    return f"pruned r={pruning['retention']:g} {scorer}{conditioning} ({settings['model']})"


def _retention(settings: dict) -> float:
    return 1.0 if settings.get("pruning") is None else float(settings["pruning"]["retention"])


def run_labels(reports: list[dict]) -> list[str]:
    """Each run's method label, followed by its folder where two runs on one dataset would
    otherwise share a label (runs that differ in what the label does not say: image size,
    sequences, ...)."""
    labels = [method_label(r["settings"]) for r in reports]
    keys = [(r["settings"]["dataset"], label) for r, label in zip(reports, labels, strict=True)]
    return [
        f"{label} [{r['run_dir']}]" if keys.count(key) > 1 else label
        for r, label, key in zip(reports, labels, keys, strict=True)
    ]


def markdown_report(reports: list[dict]) -> str:
    """Table 1 of the source paper, per dataset and method: J, F, J&F, FPS, peak memory,
    refinements; then the memory bank and kept tokens; then J&F per method and dataset."""
    lines = [
        "| dataset | method | J | F | J&F | FPS | peak memory (MiB) | bank KiB/frame/object | kept | refinement rounds (all sequences) | clicks |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(
        reports, key=lambda r: (r["settings"]["dataset"], r["settings"]["method"] != "sam2", -_retention(r["settings"]))
    )
    label_of = dict(zip(map(id, ordered), run_labels(ordered), strict=True))
    for report in ordered:
        settings, overall = report["settings"], report["overall"]
        memory_kind = "GPU" if overall["memory_kind"] == "cuda_max_allocated" else "RSS"
        lines.append(
            f"| {settings['dataset']} | {label_of[id(report)]} | {overall['J-Mean']:.3f} | {overall['F-Mean']:.3f} "
            f"| {overall['J&F-Mean']:.3f} | {overall['fps']:.2f} | {overall['peak_memory_mib']:.0f} ({memory_kind}) "
            f"| {overall['memory_bank_bytes_per_frame'] / 1024:.0f} | {overall['kept_fraction']:.2f} "
            f"| {overall['refinement_rounds']} | {overall['clicks']} |"
        )
    datasets = sorted({r["settings"]["dataset"] for r in reports})
    methods = list(dict.fromkeys(label_of[id(r)] for r in ordered))
    lines += [
        "",
        "J&F by method and dataset:",
        "",
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    for method in methods:
        cells = []
        for dataset in datasets:
            match = [r for r in ordered if r["settings"]["dataset"] == dataset and label_of[id(r)] == method]
            cells.append(f"{match[0]['overall']['J&F-Mean']:.3f}" if match else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    differing = _differing_settings(reports)
    if differing:
        lines += ["", f"Note: the runs differ in more than method and pruning: {', '.join(differing)}."]
    for dataset in datasets:
        covered = {  # per run that lists its sequences
            label_of[id(r)]: sorted(str(s.get("sequence")) for s in r["per_sequence"] if isinstance(s, dict))
            for r in ordered
            if r["settings"]["dataset"] == dataset and isinstance(r.get("per_sequence"), list)
        }
        if len({tuple(names) for names in covered.values()}) > 1:
            shown = "; ".join(f"{label}: {counted(len(names), 'sequence')}" for label, names in covered.items())
            lines += [
                "",
                f"Note: the {dataset} runs are over different sequences ({shown}): their figures do not compare "
                "(clicks and refinement rounds are sums over sequences).",
            ]
    before = [label_of[id(r)] for r in ordered if r["settings"].get("protocol_revision", 1) < 2]
    if before:
        lines += [
            "",
            f"Note: {', '.join(before)} ran before sam2prune made corrected frames conditioning frames: every "
            "correction was lost (refinement changed no mask), and the FPS included scoring; run again to compare.",
        ]
    if any(r["settings"]["checkpoint"] is None for r in reports):
        lines += ["", "Note: runs without a checkpoint used RANDOM weights: their J and F are not meaningful."]
    return "\n".join(lines) + "\n"


def _differing_settings(reports: list[dict]) -> list[str]:
    """The settings (``protocol.max_rounds`` for a nested one) whose values differ between runs,
    besides what a table compares: method and pruning, the dataset (and its root and split,
    compared within a dataset), and the static step (a pruned predictor's alone)."""

    def flat(values: dict, prefix: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in values.items():
            if not prefix and key in ("pruning", "method", "dataset", "root", "split", "static_step"):
                continue
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
        return out

    def differing(flattened: list[dict[str, str]]) -> set[str]:
        keys = {key for f in flattened for key in f}
        return {key for key in keys if len({f.get(key) for f in flattened}) > 1}

    settings = [r["settings"] for r in reports]
    found = differing([flat(s) for s in settings])
    pruned = [s for s in settings if s["method"] == "pruned"]
    found |= differing([{"static_step": json.dumps(s.get("static_step", "off"))} for s in pruned])
    for dataset in {s["dataset"] for s in settings}:
        found |= differing(
            [{k: json.dumps(s.get(k)) for k in ("root", "split")} for s in settings if s["dataset"] == dataset]
        )
    return sorted(found)


def pyplot() -> Any:
    """matplotlib.pyplot, drawing off-screen.

    Raises:
        InputError: matplotlib is not installed (naming what to install).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise InputError(
            "--plot needs matplotlib: pip install 'sam2prune[plot]' (or pip install matplotlib)"
        ) from error
    return plt


def plot_tradeoff(path: Path, reports: list[dict]) -> None:
    """J&F and FPS against retention, one line per dataset (unpruned SAM 2 at retention 1 as a cross)."""
    plt = pyplot()
    figure, (quality, speed) = plt.subplots(1, 2, figsize=(10, 4))
    labels = dict(zip(map(id, reports), run_labels(reports), strict=True))
    for dataset in sorted({r["settings"]["dataset"] for r in reports}):
        # one line per pruning setting but the retention (runs that share a label: one each)
        lines: dict[str, list[dict]] = {}
        for report in sorted(reports, key=lambda r: _retention(r["settings"])):
            if report["settings"]["dataset"] == dataset and report["settings"]["method"] == "pruned":
                lines.setdefault(re.sub(r"^pruned r=\S+ ", "pruned ", labels[id(report)]), []).append(report)
        baseline = [r for r in reports if r["settings"]["dataset"] == dataset and r["settings"]["method"] == "sam2"]
        color = None
        for name, pruned in lines.items():
            label = dataset if len(lines) == 1 else f"{dataset}: {name}"
            retentions = [_retention(r["settings"]) for r in pruned]
            line = quality.plot(retentions, [r["overall"]["J&F-Mean"] for r in pruned], "o-", label=label)[0]
            speed.plot(retentions, [r["overall"]["fps"] for r in pruned], "o-", color=line.get_color())
            color = color or line.get_color()
        for report in baseline:
            # one baseline beside the dataset's lines takes their colour; several are told apart
            alone = len(baseline) == 1 and lines
            label = None if alone else f"{dataset}: {labels[id(report)]}"
            mark = quality.plot(
                [1.0], [report["overall"]["J&F-Mean"]], "x", color=color if alone else None, markersize=10, label=label
            )[0]
            speed.plot([1.0], [report["overall"]["fps"]], "x", color=mark.get_color(), markersize=10)
    crosses = " (x: unpruned SAM 2)" if any(r["settings"]["method"] == "sam2" for r in reports) else ""
    quality.set(xlabel="retention", ylabel="J&F (fraction, as the official CSVs)", title=f"accuracy{crosses}")
    speed.set(xlabel="retention", ylabel="frames per second", title=f"speed{crosses}")
    for axes in (quality, speed):
        axes.grid(alpha=0.3)
    # one legend for both panels, below them: run labels are long (a folder, where two would
    # otherwise share one), and drawn over the panels they hid the points
    handles, names = quality.get_legend_handles_labels()
    notes = []
    if any(r["settings"]["checkpoint"] is None for r in reports):
        notes.append("runs without a checkpoint used RANDOM weights: their J&F is not meaningful")
    wrapped = [textwrap.fill(name, 90) for name in names]
    rows = sum(name.count("\n") + 1 for name in wrapped) + len(notes)
    below = 0.25 * rows + 0.3  # inches
    figure.set_size_inches(10, 4 + below)
    if handles:
        figure.legend(
            handles,
            wrapped,
            loc="lower left",
            bbox_to_anchor=(0.01, 0.01 + 0.2 * len(notes) / (4 + below)),
            fontsize="small",
            frameon=False,
        )
    for number, note in enumerate(notes):
        figure.text(0.01, 0.01 + 0.2 * number / (4 + below), f"Note: {note}.", fontsize="small", color="darkred")
    figure.tight_layout(rect=(0, below / (4 + below), 1, 1))
    try:
        atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    finally:
        plt.close(figure)
