"""The evaluation protocol: one click per object, simulated refinement, scoring, and resumable
runs over a dataset."""

from __future__ import annotations

import collections.abc
import fnmatch
import json
import logging
import shutil
import statistics as stats
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import ndimage

from sam2prune.config import ProtocolConfig, PruningConfig
from sam2prune.data.datasets import VOID_LABEL, Sequence
from sam2prune.data.palette import read_label_png, write_label_png
from sam2prune.errors import InputError
from sam2prune.evaluation.davis import ObjectScores, global_measures, score_sequence, write_official_csvs
from sam2prune.evaluation.metrics import boundary_f, jaccard
from sam2prune.fsutil import (
    atomic_write,
    atomic_write_json,
    check_output_location,
    check_writable_folder,
    is_temporary,
    missing_parent,
    read_json,
    staged_directory,
)
from sam2prune.precision import bf16_autocast
from sam2prune.process_memory import peak_rss_mib, reset_peak_rss
from sam2prune.progress import progress as progress_bar
from sam2prune.prompts import ObjectPrompt
from sam2prune.segment import OnPrompted, labels_from_logits
from sam2prune.wording import counted

if TYPE_CHECKING:
    from sam2prune.predictor import SAM2Predictor

log = logging.getLogger("sam2prune")


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The pixel deepest inside a mask: the maximum of its distance transform, with the image
    border counting as outside. Unlike the centroid it is inside rings and C shapes.

    Args:
        mask: ``[H, W]`` bool, not empty.

    Returns:
        ``(x, y)`` in pixels.
    """
    if not mask.any():
        raise ValueError("cannot click into an empty mask")
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def corrective_clicks(gt: np.ndarray, pred: np.ndarray, max_clicks: int = 3) -> list[tuple[int, int, int]]:
    """Clicks that fix the largest errors: a positive click in the largest false-negative region
    and a negative one in the largest false-positive region, then the next largest regions of
    either kind, up to ``max_clicks``; each at its region's distance-transform maximum.

    Returns:
        ``[(x, y, label), ...]`` with label 1 (positive) or 0 (negative).
    """
    components: dict[int, np.ndarray] = {}
    regions: dict[int, list[tuple[int, int]]] = {}  # label -> [(size, component index)], largest first
    for label, error in ((1, gt & ~pred), (0, pred & ~gt)):
        components[label], count = ndimage.label(error)
        sizes = np.bincount(components[label].ravel(), minlength=count + 1)[1:]
        # by size, then (as a stable sort of the components in label order) by index
        regions[label] = [(int(sizes[i]), i + 1) for i in np.argsort(-sizes, kind="stable")]
    chosen = [(*regions[label].pop(0), label) for label in (1, 0) if regions[label]]
    rest = sorted(((size, index, label) for label in (1, 0) for size, index in regions[label]), key=lambda r: -r[0])
    clicks = []
    for _, index, label in (chosen + rest)[:max_clicks]:
        x, y = interior_point(components[label] == index)  # a mask for the few regions clicked only
        clicks.append((x, y, label))
    return clicks


@contextmanager
def corrections_as_conditioning(predictor: SAM2Predictor) -> Iterator[None]:
    """Inside the block, clicks on a frame already tracked make it a conditioning frame, as SAM 2's
    authors evaluate it (``add_all_frames_to_correct_as_cond``, false in sam2's inference
    configs). Otherwise sam2 1.1.0 keeps the corrected output as an ordinary memory, and
    propagation from that frame tracks it again without the clicks, writing over the correction:
    refinement would change no mask (sam2 issues 719 and 731)."""
    previous = predictor.add_all_frames_to_correct_as_cond
    predictor.add_all_frames_to_correct_as_cond = True
    try:
        yield
    finally:
        predictor.add_all_frames_to_correct_as_cond = previous


def frame_scores(gt: np.ndarray, labels: np.ndarray, obj_id: int) -> tuple[float, float]:
    """(J, F) of one object on one frame; void (255) reads as background, as in the official tool."""
    truth = gt == obj_id
    predicted = labels == obj_id
    return jaccard(truth, predicted), boundary_f(truth, predicted)


@dataclass
class SequenceRecord:
    """What one sequence's run produced (saved as JSON, so a run can resume)."""

    name: str
    frames: int
    obj_ids: list[int]
    j: dict[str, list[float]]  # per object id: J of each evaluated frame
    f: dict[str, list[float]]
    seconds_tracking: float  # the predictor's time in the first pass over the video (SequenceTracker._track)
    seconds_total: float  # wall clock of every pass, refinement rounds, scoring and writing included
    fps: float
    peak_memory_mib: float
    memory_kind: str  # "cuda_max_allocated" or "peak_rss"
    memory_bank_bytes_per_frame: float  # these two over the first pass's tracked frames and objects, as fps
    kept_fraction: float
    refinement_rounds: int
    clicks: int  # initial + corrective
    texts: dict[str, str] = field(default_factory=dict)  # per object id, the automatic phrase
    # tracked, but with no annotated frame to score after the one each was prompted on
    unscored_obj_ids: list[int] = field(default_factory=list)

    def object_scores(self) -> list[ObjectScores]:
        return [
            ObjectScores(name=f"{self.name}_{obj_id}", j=np.array(self.j[str(obj_id)]), f=np.array(self.f[str(obj_id)]))
            for obj_id in self.obj_ids
        ]


class LabelMaps(Mapping[int, np.ndarray]):
    """The label map ``[H, W]`` uint8 of each frame of a sequence, read back from the palette PNGs
    a tracker wrote as it went (a sequence's labels are never all held in memory)."""

    def __init__(self, folder: Path, frame_names: list[str]) -> None:
        self.folder = folder
        self.frame_names = frame_names

    def __getitem__(self, frame_idx: int) -> np.ndarray:
        if not 0 <= frame_idx < len(self.frame_names):
            raise KeyError(frame_idx)
        return read_label_png(self.folder / f"{self.frame_names[frame_idx]}.png")

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.frame_names)))

    def __len__(self) -> int:
        return len(self.frame_names)


class SequenceTracker:
    """Runs the protocol on one sequence with one predictor.

    Each frame's labels are written to ``masks_dir`` as tracking produces them (a temporary
    folder when None) and the annotated frames are scored as they come, so nothing grows with
    the sequence but these scores; with ``bounded_memory`` (``SAM2Predictor.init_state``) the
    tracking state does not either.
    """

    def __init__(
        self,
        predictor: SAM2Predictor,
        sequence: Sequence,
        protocol: ProtocolConfig,
        on_prompted: OnPrompted | None = None,
        *,
        masks_dir: Path | None = None,
        bounded_memory: bool = True,
    ) -> None:
        self.predictor = predictor
        self.sequence = sequence
        self.protocol = protocol
        self.on_prompted = on_prompted  # (predictor, state, {obj_id: mask}) after the first clicks
        self.masks_dir = masks_dir
        self.bounded_memory = bounded_memory
        self.clicks = 0
        self.kept: dict[str, np.ndarray] = {}  # "<frame>_<obj_id>": keep_idx of each tracked frame
        self._scores: dict[tuple[int, int], tuple[float, float]] = {}  # (frame, obj_id): (J, F)
        self._memory: dict[tuple[int, int], dict] = {}  # (frame, obj_id): what tracking stored there
        self._written: set[int] = set()
        self._temporary: tempfile.TemporaryDirectory | None = None

    def labels(self, frame_idx: int) -> np.ndarray:
        """The labels last written for a frame."""
        assert self.masks_dir is not None  # set by run(), before any frame is written
        return read_label_png(self.masks_dir / f"{self.sequence.source.frame_names[frame_idx]}.png")

    def _write(self, frame_idx: int, labels: np.ndarray) -> None:
        assert self.masks_dir is not None  # set by run(), before any frame is written
        write_label_png(self.masks_dir / f"{self.sequence.source.frame_names[frame_idx]}.png", labels)
        self._written.add(frame_idx)

    def _track(self, state: dict, start: int) -> float:
        """Track forward from ``start`` (the first prompted frame, or a corrected frame): write
        each frame's labels, score it if annotated, and note what tracking stored for it. Each
        object is clicked on the frame it first appears on, and the predictor tracks an object
        only from its first prompt on (empty logits before it), so the labels need no masking by
        first appearance.

        Returns:
            the seconds the predictor took: each frame's step up to its logits (on CUDA, up to
            one synchronisation per frame), not what is done with them here (labels, the mask
            written, scoring: the official J and F of one object on one 480p frame take about as
            long as a tracking step on a GPU).
        """
        sequence = self.sequence
        cuda = self.predictor.device.type == "cuda"
        seconds = 0.0
        passed = iter(self.predictor.propagate_in_video(state, start_frame_idx=start))
        try:
            while True:
                begin = time.perf_counter()
                try:
                    frame_idx, obj_ids, logits = next(passed)
                except StopIteration:
                    break
                if cuda:
                    torch.cuda.synchronize(self.predictor.device)
                seconds += time.perf_counter() - begin
                labels = labels_from_logits(list(obj_ids), logits)
                self._write(frame_idx, labels)
                if frame_idx in sequence.annotated:
                    gt = sequence.ground_truth(frame_idx)
                    for obj_id in sequence.obj_ids:
                        if frame_idx > sequence.first_frames[obj_id]:
                            self._scores[(frame_idx, obj_id)] = frame_scores(gt, labels, obj_id)
                for obj_id, entry in self.predictor.frame_memory(state, frame_idx).items():
                    if entry["conditioning"]:
                        self._memory.pop((frame_idx, obj_id), None)
                    else:
                        self._memory[(frame_idx, obj_id)] = entry
                kept = self.predictor.kept_tokens(state, frame_idx)
                for obj_id in obj_ids:
                    keep_idx = kept.get((frame_idx, obj_id))
                    if keep_idx is None:
                        self.kept.pop(f"{frame_idx}_{obj_id}", None)
                    else:
                        self.kept[f"{frame_idx}_{obj_id}"] = keep_idx.cpu().numpy()
        finally:
            # a pass stopped by an error too: left to the garbage collector, it ended its
            # progress after the error was printed
            if isinstance(passed, Generator):
                passed.close()
        return seconds

    def _refinement_candidates(self) -> list[tuple[float, int, int]]:
        """(J&F, frame, object) of every annotated frame after each object's prompt frame."""
        return [((j + f) / 2, frame_idx, obj_id) for (frame_idx, obj_id), (j, f) in sorted(self._scores.items())]

    def run(self) -> tuple[LabelMaps, dict]:
        """Prompt, track, refine. Returns (label map per frame, read back from ``masks_dir``; run
        statistics)."""
        predictor, sequence = self.predictor, self.sequence
        if self.masks_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="sam2prune-labels-")
            self.masks_dir = Path(self._temporary.name)
        state = predictor.init_state(sequence.source, bounded_memory=self.bounded_memory)
        masks = {}
        for prompt in protocol_prompts(sequence):
            _, obj_ids, logits = predictor.add_new_points_or_box(
                state, prompt.frame, prompt.obj_id, points=[list(prompt.points[0])], labels=list(prompt.labels)
            )
            masks[prompt.obj_id] = (logits[list(obj_ids).index(prompt.obj_id), 0] > 0).cpu().numpy()
            self.clicks += 1
        if self.on_prompted is not None:
            self.on_prompted(predictor, state, masks)
        start = time.perf_counter()
        first_frame = min(sequence.first_frames.values())
        seconds_tracking = self._track(state, first_frame)
        tracked_frames = len(sequence.source) - first_frame
        # the memory of the first pass, as its FPS: a corrected frame becomes a dense conditioning
        # frame, and after enough rounds no pruned frame would be left to measure
        entries = list(self._memory.values())
        rounds = 0
        while rounds < self.protocol.max_rounds:
            candidates = self._refinement_candidates()
            if not candidates:
                break
            worst, frame_idx, obj_id = min(candidates)
            if worst >= self.protocol.refine_below:
                break
            gt = sequence.ground_truth(frame_idx)
            clicks = corrective_clicks(gt == obj_id, self.labels(frame_idx) == obj_id, self.protocol.clicks_per_round)
            if not clicks:
                break
            with corrections_as_conditioning(predictor):
                predictor.add_new_points_or_box(
                    state,
                    frame_idx,
                    obj_id,
                    points=[[x, y] for x, y, _ in clicks],
                    labels=[label for _, _, label in clicks],
                    clear_old_points=False,
                )
            self.clicks += len(clicks)
            rounds += 1
            self._track(state, frame_idx)  # the corrected frame as the clicks made it, then on from it
        empty = np.zeros((sequence.source.height, sequence.source.width), np.uint8)
        for frame_idx in range(len(sequence.source)):
            if frame_idx not in self._written:
                self._write(frame_idx, empty)
        texts = predictor.object_texts(state)
        return LabelMaps(self.masks_dir, sequence.source.frame_names), {
            "texts": {str(k): v for k, v in texts.items()},
            "seconds_tracking": seconds_tracking,
            "seconds_total": time.perf_counter() - start,
            "fps": tracked_frames / seconds_tracking if seconds_tracking > 0 else float("inf"),
            "memory_bank_bytes_per_frame": stats.fmean(e["memory_bank_bytes"] for e in entries) if entries else 0.0,
            "kept_fraction": (
                sum(e["kept_tokens"] for e in entries) / (predictor.num_tokens * len(entries)) if entries else 1.0
            ),
            "refinement_rounds": rounds,
            "clicks": self.clicks,
        }


class _Frames(collections.abc.Sequence):
    """Frames read one at a time, when indexed."""

    def __init__(self, read: Callable[[int], np.ndarray], indices: range) -> None:
        self.read = read
        self.indices = indices

    def __getitem__(self, index):
        return self.read(self.indices[index])

    def __len__(self) -> int:
        return len(self.indices)


def check_sequences(sequences: collections.abc.Sequence[Sequence]) -> None:
    """Check what needs no model, before one is built (seconds to a minute) and a sequence is
    tracked: each sequence's annotations (``Sequence.check_annotations``: their files' headers),
    a DAVIS sequence's at least 3 frames (the first and last are not scored), and that some
    object has an annotated frame to score after the one it is prompted on.

    Raises:
        InputError: naming the sequence (and the frame and file).
    """
    for sequence in sequences:
        if sequence.official_davis and len(sequence.source) < 3:
            raise InputError(
                f"sequence {sequence.name}: {counted(len(sequence.source), 'frame')} in {sequence.source.path}; the "
                "DAVIS evaluation needs at least 3 (it scores all but the first and last)"
            )
        sequence.check_annotations()
    if not any(
        sequence.official_davis or any(frame_idx > sequence.first_frames[obj_id] for frame_idx in sequence.annotated)
        for sequence in sequences
        for obj_id in sequence.obj_ids
    ):
        raise InputError(
            f"nothing to score: no object of the {counted(len(sequences), 'sequence')} has an annotated frame after the "
            "one it would be prompted on"
        )


def score_tracked_sequence(sequence: Sequence, labels: Mapping[int, np.ndarray]) -> list[ObjectScores]:
    """J and F per object. DAVIS: exactly the official semi-supervised evaluation (object count
    from the first annotation, first and last frames excluded). Other datasets: each object over
    the annotated frames after the one it was prompted on; an object first seen on the last
    annotated frame has none, and is left out (its mean would be NaN, and so every mean over
    objects). Frames are read one at a time."""
    if sequence.official_davis:
        count = len(sequence.source)
        gt_frames = _Frames(sequence.ground_truth, range(count))
        return score_sequence(sequence.name, gt_frames, _Frames(labels.__getitem__, range(1, count - 1)))
    values: dict[int, list[tuple[float, float]]] = {obj_id: [] for obj_id in sequence.obj_ids}
    for i in sorted(sequence.annotated):  # each label map read once, for every object it scores
        scored = [obj_id for obj_id in sequence.obj_ids if i > sequence.first_frames[obj_id]]
        if scored:
            gt = sequence.ground_truth(i)
            gt = np.where(gt == VOID_LABEL, 0, gt)
            for obj_id in scored:
                values[obj_id].append(frame_scores(gt, labels[i], obj_id))
    return [
        ObjectScores(
            name=f"{sequence.name}_{obj_id}",
            j=np.array([v[0] for v in values[obj_id]]),
            f=np.array([v[1] for v in values[obj_id]]),
        )
        for obj_id in sequence.obj_ids
        if values[obj_id]
    ]


@dataclass
class EvalSettings:
    """What a run is; a run folder resumes only with the same settings. Saved as its
    ``run.json`` (``asdict``), read back with ``load``."""

    dataset: str
    root: str
    split: str | None
    method: str
    model: str
    checkpoint: str | None
    image_size: int
    device: str
    pruning: PruningConfig | None  # None: unpruned SAM 2
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    # tracking keeps only what later frames read (same masks; less memory): SAM2Predictor.init_state
    bounded_memory: bool = True
    bf16: bool = False  # tracking under bfloat16 autocast (CUDA)
    static_step: str = "off"  # how the pruned predictor runs steady frames (set_static_step)
    # 2: corrected frames are conditioning frames (``corrections_as_conditioning``); runs made
    # before (1) lost every correction, so they do not resume
    protocol_revision: int = 2

    @classmethod
    def load(cls, path: Path) -> EvalSettings:
        """The settings of a run from its ``run.json``, with its configs as dataclasses again.

        Raises:
            InputError: the file is missing or not a run's settings.
        """
        saved = read_json(path, what="run settings")
        try:
            # JSON has no tuples: the configs' tuple fields come back as lists
            pruning = saved["pruning"]
            if pruning is not None:
                values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in pruning.items()}
                pruning = PruningConfig(**values)
            protocol = ProtocolConfig(**saved["protocol"])
            return cls(**{"protocol_revision": 1, **saved, "pruning": pruning, "protocol": protocol})
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"run settings {path} are not those of a sam2prune run: {error}") from error


# settings that do not change a run's masks: a run resumes one made with another value
RESUMES_ACROSS = ("bounded_memory",)


def _setting_text(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _differences(previous: dict, current: dict, prefix: str = "") -> list[str]:
    """``"key <old> there, <new> now"`` for each setting that differs (nested ones by their
    dotted name: ``pruning.retention``)."""
    found = []
    for key in sorted(previous.keys() | current.keys()):
        old, new = previous.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differences(old, new, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key} {_setting_text(old)} there, {_setting_text(new)} now")
    return found


def check_run_dir(out_dir: Path) -> None:
    """Raises InputError unless ``out_dir`` is missing, empty, or holds a sam2prune run (a
    ``run.json`` that reads back as a run's settings): nothing else is resumed into or deleted."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    try:
        EvalSettings.load(out_dir / "run.json")
    except InputError as error:
        why = "no run.json" if not (out_dir / "run.json").exists() else str(error)
        raise InputError(
            f"--out {out_dir} is a non-empty folder that holds no sam2prune run ({why}), so neither resuming "
            "nor --overwrite (which deletes a run) applies: name a new or empty folder"
        ) from None


def check_run_settings(out_dir: Path, settings: EvalSettings) -> None:
    """Raises InputError when ``out_dir`` holds a run (``check_run_dir``) with other settings
    than ``settings``, naming what differs; nothing when it holds no run.json."""
    run_file = out_dir / "run.json"
    if not run_file.is_file():
        return
    current = json.loads(json.dumps(asdict(settings)))  # as it reads back (tuples become lists)
    # as read back: a setting added since the run was made has its default (the run was made
    # with it), in the configs too
    previous = json.loads(json.dumps(asdict(EvalSettings.load(run_file))))
    if previous["checkpoint"] is not None:  # runs made before it was resolved: from here, as then
        previous["checkpoint"] = str(Path(previous["checkpoint"]).resolve())
    for name in ("aligner", "router_weights"):  # likewise the files of the pruning config
        if previous["pruning"] is not None and previous["pruning"].get(name) is not None:
            previous["pruning"][name] = str(Path(previous["pruning"][name]).resolve())
    # bounded memory gives the same masks (tested): either resumes the other
    changed = [k for k in current if previous[k] != current[k] and k not in RESUMES_ACROSS]
    if changed:
        differences = _differences({k: previous[k] for k in changed}, {k: current[k] for k in changed})
        raise InputError(
            f"--out {out_dir} holds a run with other settings ({'; '.join(differences)}); "
            "use another folder or --overwrite"
        )


# the results of a run's last completion, in its folder
RUN_RESULTS = ("report.json", "summary.json", "global_results-*.csv", "per-sequence_results-*.csv")


def _run_entries(out_dir: Path, names: tuple[str, ...]) -> list[Path]:
    return [entry for entry in out_dir.iterdir() if any(fnmatch.fnmatchcase(entry.name, name) for name in names)]


def _written_by_the_run(out_dir: Path) -> list[Path]:
    """What a run wrote into its folder, run.json and the folders ``sequences/`` and ``masks/``
    aside: its results, each sequence's record and kept tokens, each sequence's folder of masks
    (PNGs only: a folder holding anything else is the user's), and the temporaries of killed
    runs there; each once. Nothing else (the user's notes, plots, files put among the masks)."""
    ours: list[Path] = _run_entries(out_dir, RUN_RESULTS)
    sequences, masks = out_dir / "sequences", out_dir / "masks"
    if sequences.is_dir() and not sequences.is_symlink():
        ours += [e for e in sequences.iterdir() if e.is_file() and e.name.endswith((".json", ".kept.npz"))]
    if masks.is_dir() and not masks.is_symlink():
        ours += [
            folder
            for folder in masks.iterdir()
            if folder.is_dir()
            and not folder.is_symlink()
            and all(f.is_file() and not f.is_symlink() and f.suffix == ".png" for f in folder.iterdir())
        ]
    for folder in (sequences, masks):
        if folder.is_dir() and not folder.is_symlink():
            ours += [entry for entry in folder.iterdir() if is_temporary(entry)]
    return list(dict.fromkeys(ours))  # a killed run's staging folder of PNGs is both


def _relative_name(path: Path, out_dir: Path) -> str:
    """``masks/chair/notes.txt``; a folder with a slash: ``masks/chair/plots/``."""
    return path.relative_to(out_dir).as_posix() + ("/" if path.is_dir() and not path.is_symlink() else "")


def _check_deletable(out_dir: Path) -> list[Path]:
    """What the run wrote there (``_written_by_the_run``), once checked that ``sequences/`` and
    ``masks/`` hold nothing else.

    Raises:
        InputError: they hold something the run did not write (a run writes there again, so
            those are not kept: they are named, nothing is deleted).
    """
    written = _written_by_the_run(out_dir)
    ours = set(written)
    foreign = []
    for folder in (out_dir / "sequences", out_dir / "masks"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            if entry in ours:
                continue
            if folder.name == "masks" and entry.is_dir() and not entry.is_symlink():
                # a sequence's masks with files of the user's among them: those files
                foreign += [
                    _relative_name(inner, out_dir)
                    for inner in entry.iterdir()
                    if not (inner.is_file() and not inner.is_symlink() and inner.suffix == ".png")
                ]
            else:
                foreign.append(_relative_name(entry, out_dir))
    foreign.sort()
    foreign += [name for name in ("sequences", "masks") if (out_dir / name).is_symlink()]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"--out {out_dir} holds {shown}, which the run did not write, where --overwrite deletes what it wrote: "
            "move them out first"
        )
    return written


def _delete_run(out_dir: Path) -> None:
    """Delete what the run wrote (``_written_by_the_run``), run.json last; the rest stays.

    Raises:
        InputError: files the run did not write are in its way (``_check_deletable``).
    """
    for entry in _check_deletable(out_dir):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    _remove_empty_run_folders(out_dir)
    (out_dir / "run.json").unlink(missing_ok=True)


def _remove_empty_run_folders(out_dir: Path) -> None:
    """Remove the run's ``sequences/`` and ``masks/`` folders where they are empty."""
    for folder in (out_dir / "sequences", out_dir / "masks"):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()


def discard_unstarted_run(out_dir: Path, *, made_folder: bool) -> None:
    """Remove a run ``prepare_run_dir`` began where no sequence has finished (its workers could
    not set up): its run.json and empty folders, and ``out_dir`` itself if ``made_folder`` and it
    is left empty. A run with a finished sequence, or files of others, stays as it is."""
    if not (out_dir / "run.json").is_file() or any((out_dir / "sequences").glob("*.json")):
        return
    _remove_empty_run_folders(out_dir)
    if {entry.name for entry in out_dir.iterdir()} == {"run.json"}:
        (out_dir / "run.json").unlink()
        if made_folder:
            out_dir.rmdir()


def check_run_folder_for(out_dir: Path, settings: EvalSettings, *, overwrite: bool) -> None:
    """Everything ``prepare_run_dir`` checks before it changes anything: check the folders of a
    batch of runs with it before preparing the first (``--overwrite`` deletes a run).

    Raises:
        InputError: as ``prepare_run_dir``.
    """
    check_output_location(out_dir, inputs=[("--root", Path(settings.root))])
    check_run_dir(out_dir)
    if out_dir.is_dir():
        check_writable_folder(out_dir, option=f"--out {out_dir}")
        if overwrite:
            _check_deletable(out_dir)
        else:
            check_run_settings(out_dir, settings)


def prepare_run_dir(out_dir: Path, settings: EvalSettings, *, overwrite: bool, pending: bool = True) -> None:
    """Create the run folder, or check that an existing one holds a run with the same settings
    (``overwrite``: delete the run there, what it wrote only, and start over; a folder holding
    something else than a run is never deleted). With ``pending`` (a sequence of this run has no
    record yet), the results of the run's last completion (``report.json``, the CSVs) are
    removed: they are written again when it completes, and until then describe other sequences.

    Raises:
        InputError: the folder holds something else, or a run with other settings, or cannot
            be written.
    """
    check_run_folder_for(out_dir, settings, overwrite=overwrite)
    run_file = out_dir / "run.json"
    if out_dir.exists() and overwrite:
        _delete_run(out_dir)  # the user's own files stay
    if run_file.is_file():
        check_run_settings(out_dir, settings)
        for entry in _run_entries(out_dir, RUN_RESULTS) if pending else ():
            entry.unlink()
    else:
        if not out_dir.parent.is_dir():
            raise missing_parent(out_dir, option="--out")
        out_dir.mkdir(exist_ok=True)
        atomic_write_json(run_file, asdict(settings))  # first: a folder holding a part of a run is one
    (out_dir / "sequences").mkdir(exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)


def evaluate_sequence(
    predictor: SAM2Predictor,
    sequence: Sequence,
    out_dir: Path,
    *,
    protocol: ProtocolConfig,
    device: torch.device,
    on_prompted: OnPrompted | None = None,
    bounded_memory: bool = True,
    bf16: bool = False,
) -> SequenceRecord:
    """Run the protocol on one sequence and write its results into the run folder ``out_dir``:
    ``masks/<seq>/*.png`` (each frame as it is tracked, into a staged folder that replaces the
    sequence's only when it is done), the kept token indices per tracked frame and object
    (``sequences/<seq>.kept.npz``) and, last, the record ``sequences/<seq>.json`` that marks the
    sequence as done. Each is written atomically, so a run killed at any point leaves no
    half-written file or mask folder, and a sequence without its record is run again on resume.
    The serial and the distributed (Ray) runs both call this.

    ``on_prompted``: a tracker hook (e.g. automatic object texts); ``bounded_memory``: the
    tracking state keeps only what later frames read (``SAM2Predictor.init_state``); ``bf16``:
    track under bfloat16 autocast (CUDA)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    with staged_directory(out_dir / "masks" / sequence.name, overwrite=True) as staging:
        tracker = SequenceTracker(
            predictor, sequence, protocol, on_prompted=on_prompted, masks_dir=staging, bounded_memory=bounded_memory
        )
        with bf16_autocast(bf16, device):
            labels, run_stats = tracker.run()
        if device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
        else:
            peak, kind = peak_rss_mib(), "peak_rss"
        scores = score_tracked_sequence(sequence, labels)  # in the staging: a sequence that fails leaves nothing
    # values typed Any: numpy's stub checks the ** arrays against savez_compressed's allow_pickle too
    kept: dict[str, Any] = tracker.kept
    atomic_write(out_dir / "sequences" / f"{sequence.name}.kept.npz", lambda temp: np.savez_compressed(temp, **kept))
    scored = [int(s.name.rsplit("_", 1)[1]) for s in scores]  # DAVIS: also objects no frame shows
    unscored = [obj_id for obj_id in sequence.obj_ids if obj_id not in scored]
    if unscored:
        last = max(sequence.annotated)
        log.warning(
            "%s: %s first seen on its last annotated frame (%d), with no later annotated frame to score: "
            "left out of J and F",
            sequence.name,
            ("object " if len(unscored) == 1 else "objects ") + ", ".join(map(str, unscored)),
            last,
        )
    record = SequenceRecord(
        name=sequence.name,
        frames=len(sequence.source),
        obj_ids=scored,
        unscored_obj_ids=unscored,
        j={str(s.name.rsplit("_", 1)[1]): s.j.tolist() for s in scores},
        f={str(s.name.rsplit("_", 1)[1]): s.f.tolist() for s in scores},
        peak_memory_mib=peak,
        memory_kind=kind,
        **run_stats,
    )
    atomic_write_json(record_path(out_dir, sequence.name), asdict(record))
    return record


def record_path(out_dir: Path, name: str) -> Path:
    """Where a run folder keeps a sequence's record; the sequence is done when it exists."""
    return out_dir / "sequences" / f"{name}.json"


def load_record(out_dir: Path, name: str) -> SequenceRecord | None:
    """The record of a finished sequence of the run in ``out_dir``, or None if it is not done."""
    path = record_path(out_dir, name)
    if not path.is_file():
        return None
    try:
        return SequenceRecord(**json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        raise InputError(
            f"the record of sequence {name}, {path}, cannot be read ({type(error).__name__}: {error}): delete it, and the same "
            "command runs that sequence again"
        ) from None


def evaluate_sequences(
    predictor: SAM2Predictor,
    sequences: list[Sequence],
    out_dir: Path,
    *,
    protocol: ProtocolConfig,
    device: torch.device,
    progress: bool = True,
    on_prompted_for: Callable[[Sequence], OnPrompted | None] | None = None,
    bounded_memory: bool = True,
    bf16: bool = False,
) -> list[SequenceRecord]:
    """Run the protocol (``evaluate_sequence``) on each sequence not finished yet in ``out_dir``
    (resumable), one after the other. Returns every sequence's record.

    ``on_prompted_for(sequence)`` may give a tracker hook (e.g. automatic object texts)."""
    records = {sequence.name: load_record(out_dir, sequence.name) for sequence in sequences}
    # the bar counts what is left to run: a resumed run's finished sequences would make it jump
    pending = [sequence for sequence in sequences if records[sequence.name] is None]
    bar = progress_bar(pending, desc="evaluating", unit="sequence", disable=not progress or not pending)
    for sequence in bar:
        bar.set_postfix_str(sequence.name)
        hook = on_prompted_for(sequence) if on_prompted_for is not None else None
        records[sequence.name] = evaluate_sequence(
            predictor,
            sequence,
            out_dir,
            protocol=protocol,
            device=device,
            on_prompted=hook,
            bounded_memory=bounded_memory,
            bf16=bf16,
        )
    return [record for record in records.values() if record is not None]


def kept_token_overlap(run_a: Path, run_b: Path) -> float | None:
    """Mean IoU of the kept token sets of two runs over the tracked frames and objects they
    share (e.g. two phrasings of the same targets), or None if they share none."""
    values = []
    for path_a in sorted((run_a / "sequences").glob("*.kept.npz")):
        path_b = run_b / "sequences" / path_a.name
        if not path_b.is_file():
            continue
        with np.load(path_a) as kept_a, np.load(path_b) as kept_b:
            for key in set(kept_a.files) & set(kept_b.files):
                a, b = set(kept_a[key].tolist()), set(kept_b[key].tolist())
                values.append(len(a & b) / len(a | b))
    return float(np.mean(values)) if values else None


def summarize(records: list[SequenceRecord], settings: EvalSettings, out_dir: Path) -> dict:
    """Overall and per-sequence results; writes the official CSVs (set name = split) and
    ``report.json``."""
    scores = [score for record in records for score in record.object_scores()]
    if not scores:
        raise InputError(
            f"nothing to score: no object of the {counted(len(records), 'sequence')} has an annotated frame after the "
            "one it was prompted on"
        )
    measures = global_measures(scores)
    write_official_csvs(out_dir, settings.split or "all", measures, scores)
    total_frames = sum(r.frames for r in records)
    per_sequence = []
    for record in records:
        # None: no object of the sequence had a frame to score
        sequence_measures = global_measures(record.object_scores()) if record.obj_ids else {}
        per_sequence.append(
            {
                "sequence": record.name,
                "J": sequence_measures.get("J-Mean"),
                "F": sequence_measures.get("F-Mean"),
                "J&F": sequence_measures.get("J&F-Mean"),
                "fps": record.fps,
                "peak_memory_mib": record.peak_memory_mib,
                "memory_bank_bytes_per_frame": record.memory_bank_bytes_per_frame,
                "kept_fraction": record.kept_fraction,
                "refinement_rounds": record.refinement_rounds,
                "clicks": record.clicks,
            }
        )
    report = {
        "settings": asdict(settings),
        "overall": {
            **measures,
            "sequences": len(records),
            "objects": len(scores),
            "unscored_objects": sum(len(r.unscored_obj_ids) for r in records),
            "frames": total_frames,
            # frames tracked in the first passes over their total time
            "fps": sum(r.fps * r.seconds_tracking for r in records) / sum(r.seconds_tracking for r in records),
            "peak_memory_mib": max(r.peak_memory_mib for r in records),
            "memory_kind": records[0].memory_kind,
            "memory_bank_bytes_per_frame": stats.fmean(r.memory_bank_bytes_per_frame for r in records),
            "kept_fraction": stats.fmean(r.kept_fraction for r in records),
            "refinement_rounds": sum(r.refinement_rounds for r in records),
            "clicks": sum(r.clicks for r in records),
        },
        "per_sequence": per_sequence,
    }
    atomic_write_json(out_dir / "report.json", report)
    return report


def protocol_prompts(sequence: Sequence) -> list[ObjectPrompt]:
    """The protocol's first prompt of each object of a sequence: one positive click on the first
    frame the object appears on, at the maximum of the distance transform of its mask."""
    prompts = []
    for obj_id in sequence.obj_ids:
        frame = sequence.first_frames[obj_id]
        click = interior_point(sequence.ground_truth(frame) == obj_id)
        prompts.append(ObjectPrompt(obj_id=obj_id, frame=frame, points=(click,), labels=(1,)))
    return prompts
