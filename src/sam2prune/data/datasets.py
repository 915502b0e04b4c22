"""Dataset readers: each yields ``Sequence`` objects (frames, ground-truth object masks on the
annotated frames, object ids and the frame each object first appears on).

Expected layouts: ``LAYOUTS`` (shown by ``sam2prune eval --help``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2prune.data.palette import label_png_size, read_label_png
from sam2prune.data.video import VideoSource, image_size, list_frame_files, natural_key, read_rgb
from sam2prune.errors import InputError
from sam2prune.fsutil import read_json
from sam2prune.wording import counted

VOID_LABEL = 255
MAX_OBJECT_ID = 254  # label maps are uint8, 255 marking void
DATASETS = ("davis", "vost", "pumavos", "lvos", "uvo", "endovis18")
# what each reader expects (ROOT is what --root points to)
LAYOUTS = {
    "davis": "DAVIS 2017: ROOT/JPEGImages/480p/<seq>/*.jpg, ROOT/Annotations/480p/<seq>/*.png (palette PNGs, "
    "every frame), ROOT/ImageSets/2017/<set>.txt",
    "vost": "ROOT/JPEGImages/<seq>/*.jpg, ROOT/Annotations/<seq>/*.png (the annotated frames), "
    "ROOT/ImageSets/<set>.txt",
    "pumavos": "ROOT/JPEGImages/<seq>/*.jpg, ROOT/Annotations/<seq>/*.png; all sequences",
    "lvos": "LVOS v2: ROOT/<set>/JPEGImages/<seq>/*.jpg, ROOT/<set>/Annotations/<seq>/*.png and "
    'ROOT/<set>/<set>_meta.json (or meta.json): {"videos": {<seq>: {"objects": {<id>: {"frame_range": '
    '{"start": <frame>, "end": <frame>, ...}}}}}}; objects may appear late',
    "uvo": 'YouTube-VIS style JSON ROOT/<set>.json (or --split names the JSON file): {"videos": [{"id", '
    '"file_names": [...], "height", "width"}], "annotations": [{"video_id", "segmentations": [COCO RLE or null '
    "per frame], ...}]}; frames at ROOT/<file_name> (or ROOT/JPEGImages/<file_name>); object ids are 1.. in "
    "annotation order",
    "endovis18": "EndoVis 2018 scene segmentation: ROOT/<seq>/left_frames/*.png, ROOT/<seq>/labels/*.png (RGB "
    'colour-coded classes) and ROOT/labels.json ([{"name", "color": [r, g, b], "classid"}], or per sequence '
    "ROOT/<seq>/labels.json): each class present becomes object id = classid; classid 0 is background",
}
GROUND_TRUTH_CACHE = 4  # label maps a sequence keeps decoded (the frame being tracked and scored, a few before)


@dataclass
class Sequence:
    """One video with ground truth.

    Attributes:
        name: sequence name.
        source: the frames.
        annotated: frame index -> loader of its ``[H, W]`` uint8 label map (0 background,
            k = object k, 255 void), for every annotated frame.
        obj_ids: the objects to track.
        first_frames: object id -> index of the first annotated frame it is visible on.
        official_davis: scored exactly as the official DAVIS 2017 tool (object count from the
            first frame, first and last frames excluded).
        label_pngs: frame index -> the label PNG its loader reads, where the annotations are
            such files (``check_annotations`` reads their headers).

    The last ``GROUND_TRUTH_CACHE`` label maps read are kept (not pickled): a dataset's label
    maps are never all held.
    """

    name: str
    source: VideoSource
    annotated: Mapping[int, Callable[[], np.ndarray]]
    obj_ids: list[int]
    first_frames: dict[int, int]
    official_davis: bool = False
    label_pngs: dict[int, Path] = field(default_factory=dict)
    _cache: OrderedDict[int, np.ndarray] = field(default_factory=OrderedDict, repr=False)
    _checked: bool = field(default=False, repr=False)

    def ground_truth(self, frame_idx: int) -> np.ndarray:
        """Label map of an annotated frame (void = 255 kept)."""
        if frame_idx in self._cache:
            self._cache.move_to_end(frame_idx)
            return self._cache[frame_idx]
        labels = self.annotated[frame_idx]()
        if labels.shape != (self.source.height, self.source.width):
            raise self._size_error(frame_idx, (labels.shape[1], labels.shape[0]))
        self._cache[frame_idx] = labels
        while len(self._cache) > GROUND_TRUTH_CACHE:
            self._cache.popitem(last=False)
        return labels

    def _size_error(self, frame_idx: int, size: tuple[int, int]) -> InputError:
        path = self.label_pngs.get(frame_idx)
        return InputError(
            f"sequence {self.name}: annotation of frame {self.source.frame_names[frame_idx]}"
            f"{f' ({path})' if path is not None else ''} is {size[0]}x{size[1]} but the frames are "
            f"{self.source.width}x{self.source.height}"
        )

    def check_annotations(self) -> None:
        """Check every label PNG (``label_pngs``) from its header, before anything is tracked:
        the frames' size, and an indexed-palette or greyscale image (what ``ground_truth``
        finds only when it reads that frame). Once per sequence.

        Raises:
            InputError: naming the sequence, the frame and the file.
        """
        if self._checked:
            return
        for frame_idx, path in sorted(self.label_pngs.items()):
            try:
                size = label_png_size(path, what="annotation")
            except InputError as error:
                raise InputError(f"sequence {self.name}: {error}") from error
            if size != (self.source.width, self.source.height):
                raise self._size_error(frame_idx, size)
        self._checked = True

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": OrderedDict()}

    def first_visible(self, obj_id: int, from_frame: int = 0) -> int | None:
        """The first annotated frame at or after ``from_frame`` on which ``obj_id`` is visible;
        None if there is none."""
        return next(
            (i for i in sorted(self.annotated) if i >= from_frame and (self.ground_truth(i) == obj_id).any()), None
        )


def _objects_from_annotations(name: str, sequence: Sequence) -> tuple[list[int], dict[int, int]]:
    """Every object id of the annotations and the first annotated frame it is visible on."""
    first_frames: dict[int, int] = {}
    for frame_idx in sorted(sequence.annotated):
        for value in np.unique(sequence.ground_truth(frame_idx)):
            if value not in (0, VOID_LABEL) and int(value) not in first_frames:
                first_frames[int(value)] = frame_idx
    if not first_frames:
        raise InputError(f"sequence {name}: its annotations hold no object")
    return sorted(first_frames), first_frames


def annotation_files(folder: Path) -> list[Path]:
    """The PNG files of an annotations folder in natural order, as frames are listed: any case
    of ``.png``, hidden files (``._00000.png`` of macOS) ignored."""
    return [path for path in list_frame_files(folder) if path.suffix.lower() == ".png"]


def _png_sequence(name: str, frames_dir: Path, masks_dir: Path, *, objects: str) -> Sequence:
    """A sequence of frames with palette-PNG annotations named like the frames.

    ``objects``: ``davis`` (ids 1..max of the first annotation, as the official tool), ``all``
    (every id of every annotation, first appearance from the annotations) or ``none`` (the
    caller sets them).
    """
    if not frames_dir.is_dir():
        raise InputError(f"sequence {name}: frames folder {frames_dir} does not exist")
    if not masks_dir.is_dir():
        raise InputError(f"sequence {name}: annotations folder {masks_dir} does not exist")
    source = VideoSource.open(frames_dir)
    index_of = {stem: i for i, stem in enumerate(source.frame_names)}
    files = {}
    for path in annotation_files(masks_dir):
        if path.stem not in index_of:
            raise InputError(f"sequence {name}: annotation {path} has no frame named {path.stem} in {frames_dir}")
        files[index_of[path.stem]] = path
    if not files:
        raise InputError(f"sequence {name}: no annotation PNG in {masks_dir}")
    annotated = {frame_idx: (lambda p=path: read_label_png(p)) for frame_idx, path in files.items()}
    sequence = Sequence(name, source, annotated, [], {}, official_davis=objects == "davis", label_pngs=files)
    if objects == "davis":
        missing = [source.frame_names[i] for i in range(len(source)) if i not in annotated]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise InputError(
                f"sequence {name}: {len(missing)} of its {len(source)} frames have no annotation in {masks_dir} "
                f"({shown}); the DAVIS evaluation scores every frame against its annotation, as the official tool"
            )
        first_idx = min(annotated)
        first = sequence.ground_truth(first_idx)
        count = int(np.where(first == VOID_LABEL, 0, first).max())
        if count == 0:
            raise InputError(f"sequence {name}: the first annotation in {masks_dir} holds no object")
        # each object is prompted on the first frame it is visible on (an object of the count
        # that no frame shows is scored as the official tool does, and not tracked)
        for obj_id in range(1, count + 1):
            frame_idx = first_idx if (first == obj_id).any() else sequence.first_visible(obj_id, first_idx)
            if frame_idx is not None:
                sequence.first_frames[obj_id] = frame_idx
        sequence.obj_ids = sorted(sequence.first_frames)
    elif objects == "all":
        sequence.obj_ids, sequence.first_frames = _objects_from_annotations(name, sequence)
    return sequence


def lists_beside(path: Path) -> str:
    """For a message about a missing sequence list: the lists in its folder, or that there are none."""
    available = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
    return f"lists there: {', '.join(available)}" if available else f"{path.parent} holds no list"


def _read_list(path: Path, only: Collection[str] | None = None) -> list[str]:
    """The names a sequence list holds; with ``only``, those of them (all of ``only`` where
    there is no list: named sequences need none)."""
    if not path.is_file():
        if only:
            return list(only)
        raise InputError(
            f"sequence list {path} does not exist ({lists_beside(path)}); pass --split NAME of a list there, or name the "
            "sequences: --sequences NAME ..."
        )
    names = read_names(path)
    if only:
        unknown = [name for name in only if name not in names]
        if unknown:
            raise InputError(f"--sequences: {', '.join(unknown)} not in {path} ({counted(len(names), 'sequence')})")
        names = [name for name in names if name in only]
    return names


def read_names(path: Path) -> list[str]:
    """The names of a sequence list, one per line, each once (a UTF-8 byte-order mark ignored)."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines())
    return list(dict.fromkeys(line for line in lines if line))


def _subfolders(path: Path, only: Collection[str] | None = None) -> list[str]:
    """The folders in ``path`` (hidden ones, such as ``.ipynb_checkpoints``, ignored), in natural
    order; with ``only``, those named there."""
    if not path.is_dir():
        raise InputError(f"folder {path} does not exist")
    names = (p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted((name for name in names if not only or name in only), key=natural_key)


def read_davis(
    root: Path, split: str = "val", resolution: str = "480p", *, only: Collection[str] | None = None
) -> Iterator[Sequence]:
    names = _read_list(root / "ImageSets" / "2017" / f"{split}.txt", only)
    for name in names:
        yield _png_sequence(
            name,
            root / "JPEGImages" / resolution / name,
            root / "Annotations" / resolution / name,
            objects="davis",
        )


def read_vost(root: Path, split: str = "val", *, only: Collection[str] | None = None) -> Iterator[Sequence]:
    for name in _read_list(root / "ImageSets" / f"{split}.txt", only):
        yield _png_sequence(name, root / "JPEGImages" / name, root / "Annotations" / name, objects="all")


def read_pumavos(root: Path, split: str | None = None, *, only: Collection[str] | None = None) -> Iterator[Sequence]:
    for name in _subfolders(root / "Annotations", only):
        yield _png_sequence(name, root / "JPEGImages" / name, root / "Annotations" / name, objects="all")


def _lvos_meta(folder: Path, split: str) -> dict:
    for candidate in (folder / f"{split}_meta.json", folder / "meta.json"):
        if candidate.is_file():
            return read_json(candidate, what="LVOS meta file")
    raise InputError(f"LVOS: neither {folder / f'{split}_meta.json'} nor {folder / 'meta.json'} exists")


def read_lvos(root: Path, split: str = "valid", *, only: Collection[str] | None = None) -> Iterator[Sequence]:
    folder = root / split
    meta = _lvos_meta(folder, split)
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise InputError(f'LVOS meta file in {folder}: expected {{"videos": {{<sequence>: ...}}}}')
    for name in sorted((name for name in videos if not only or name in only), key=natural_key):
        sequence = _png_sequence(name, folder / "JPEGImages" / name, folder / "Annotations" / name, objects="none")
        objects = videos[name].get("objects") if isinstance(videos[name], dict) else None
        if not isinstance(objects, dict) or not objects:
            raise InputError(f"LVOS meta: video {name} has no objects")
        index_of = {stem: i for i, stem in enumerate(sequence.source.frame_names)}
        first_frames = {}
        for obj_key, info in objects.items():
            try:
                start = info["frame_range"]["start"]
                obj_id = int(obj_key)
            except (KeyError, TypeError, ValueError) as error:
                raise InputError(f"LVOS meta: video {name}, object {obj_key!r} has no frame_range.start") from error
            stem = Path(str(start)).stem  # a frame name, a file name or a number
            frame_idx = index_of.get(stem)
            if frame_idx is None and stem.isdigit():  # the number without the zero padding
                frame_idx = next((i for s, i in index_of.items() if s.isdigit() and int(s) == int(stem)), None)
            if frame_idx is None:
                raise InputError(
                    f"LVOS meta: video {name}, object {obj_id} starts at frame {start}, which is not in the frames"
                )
            visible = sequence.first_visible(obj_id, frame_idx)
            if visible is None:
                raise InputError(
                    f"LVOS: video {name}, object {obj_id} starts at frame {start} (meta), but no annotation from "
                    "there on shows it"
                )
            first_frames[obj_id] = visible
        sequence.obj_ids = sorted(first_frames)
        sequence.first_frames = first_frames
        yield sequence


def decode_coco_rle(rle: dict) -> np.ndarray:
    """Decode a COCO run-length encoding (compressed string or list of counts).

    Returns:
        ``[h, w]`` bool (runs are column-major, starting with background).
    """
    height, width = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _rle_counts_from_string(counts)
    flat = np.zeros(height * width, dtype=bool)
    position = 0
    for run_index, run in enumerate(counts):
        if run_index % 2:
            flat[position : position + run] = True
        position += run
    if position != height * width:
        raise ValueError(f"RLE counts sum to {position}, expected {height * width}")
    return flat.reshape(width, height).T


def _rle_counts_from_string(text: str) -> list[int]:
    """COCO's compressed counts: 5-bit groups with a continuation bit, deltas after the 2nd run."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[position]) - 48
            value |= (chunk & 0x1F) << (5 * shift)
            more = bool(chunk & 0x20)
            position += 1
            shift += 1
            if not more and chunk & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def read_uvo(root: Path, split: str = "val", *, only: Collection[str] | None = None) -> Iterator[Sequence]:
    path = root / split if split.endswith(".json") else root / f"{split}.json"
    payload = read_json(path, what="UVO annotations")
    if not isinstance(payload, dict) or "videos" not in payload or "annotations" not in payload:
        raise InputError(
            f'UVO annotations {path}: expected YouTube-VIS style {{"videos": [...], "annotations": [...]}}'
        )
    by_video: dict[object, list[dict]] = {}
    for annotation in payload["annotations"]:
        if not isinstance(annotation, dict) or "video_id" not in annotation:
            raise InputError(f'UVO annotations {path}: an annotation without "video_id": {str(annotation)[:80]}')
        by_video.setdefault(annotation["video_id"], []).append(annotation)
    for video in payload["videos"]:
        listed = video.get("file_names") if isinstance(video, dict) else None
        named = (
            Path(str(listed[0])).parent.name or str(video.get("id")) if isinstance(listed, list) and listed else None
        )
        if only and named is not None and named not in only:  # a video not asked for is not checked
            continue
        try:
            video_id, file_names = video["id"], list(video["file_names"])
            width, height = int(video["width"]), int(video["height"])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f'UVO annotations {path}: expected each video as {{"id", "file_names", "width", "height"}}; got '
                f"{str(video)[:80]} ({type(error).__name__}: {error})"
            ) from error
        if not file_names:
            raise InputError(f"UVO video {video_id}: file_names is empty")
        name = Path(file_names[0]).parent.name or str(video_id)
        if only and name not in only:
            continue
        files = [root / f for f in file_names]
        if not files[0].is_file() and (root / "JPEGImages" / file_names[0]).is_file():
            files = [root / "JPEGImages" / f for f in file_names]
        for file in files:
            if not file.is_file():
                raise InputError(f"UVO video {video_id}: frame {file} does not exist")
        if (size := image_size(files[0])) != (width, height):
            raise InputError(
                f"UVO video {video_id}: frame {files[0]} is {size[0]}x{size[1]} but {path} gives {width}x{height}"
            )
        source = VideoSource(files[0].parent, [f.stem for f in files], width, height, frame_files=files)
        objects = sorted(by_video.get(video_id, []), key=lambda a: a.get("id", 0))
        if not objects:
            continue
        if len(objects) > MAX_OBJECT_ID:
            raise InputError(
                f"UVO video {video_id} ({name}) has {len(objects)} annotated objects; label maps hold object ids "
                f"1..{MAX_OBJECT_ID} (255 marks void): evaluate the other videos by naming them with --sequences"
            )
        for obj_id, annotation in enumerate(objects, start=1):
            segmentations = annotation.get("segmentations")
            if not isinstance(segmentations, list) or len(segmentations) != len(files):
                given = len(segmentations) if isinstance(segmentations, list) else "no list of"
                raise InputError(
                    f"UVO video {video_id}, object {obj_id}: {given} segmentations for {counted(len(files), 'frame')}"
                )
            for t, segmentation in enumerate(segmentations):  # decoded as tracking reaches each frame
                if segmentation is not None:
                    _uvo_rle(segmentation, source, t, where=f"UVO video {video_id}, object {obj_id}")
        annotated_frames = sorted({t for a in objects for t, s in enumerate(a["segmentations"]) if s is not None})

        def loader(
            t: int, video_id: object = video_id, objects: list[dict] = objects, source: VideoSource = source
        ) -> np.ndarray:
            labels = np.zeros((source.height, source.width), np.uint8)
            for obj_id, annotation in enumerate(objects, start=1):
                segmentation = annotation["segmentations"][t]
                if segmentation is not None:
                    labels[_uvo_mask(segmentation, source, t, where=f"UVO video {video_id}, object {obj_id}")] = obj_id
            return labels

        annotated = {t: (lambda t=t: loader(t)) for t in annotated_frames}
        sequence = Sequence(name, source, annotated, [], {})
        for obj_id, annotation in enumerate(objects, start=1):
            first = next((t for t, s in enumerate(annotation["segmentations"]) if s is not None), None)
            # an object no segmentation shows (all null or empty) is not tracked
            visible = sequence.first_visible(obj_id, first) if first is not None else None
            if visible is not None:
                sequence.first_frames[obj_id] = visible
        sequence.obj_ids = sorted(sequence.first_frames)
        if sequence.obj_ids:
            yield sequence


def _uvo_rle(segmentation: object, source: VideoSource, t: int, *, where: str) -> dict:
    """A segmentation of frame ``t`` checked, without decoding it, as a COCO RLE of the frames' size.

    Raises:
        InputError: not an RLE, or another size than the frames.
    """
    where = f"{where}, frame {t} ({source.frame_files[t].name})"
    if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
        raise InputError(
            f'{where}: expected a COCO RLE {{"size", "counts"}} (polygons are not read); got {str(segmentation)[:60]}'
        )
    if not isinstance(segmentation["size"], list) or segmentation["size"] != [source.height, source.width]:
        raise InputError(
            f"{where}: the RLE is of size {segmentation['size']} (height, width); the video is "
            f"[{source.height}, {source.width}]"
        )
    return segmentation


def _uvo_mask(segmentation: object, source: VideoSource, t: int, *, where: str) -> np.ndarray:
    """The ``[H, W]`` bool mask of a COCO RLE segmentation of frame ``t``.

    Raises:
        InputError: not an RLE, another size than the frames, or counts that do not add up.
    """
    rle = _uvo_rle(segmentation, source, t, where=where)
    try:
        return decode_coco_rle(rle)
    except (ValueError, TypeError, IndexError) as error:
        raise InputError(
            f"{where}, frame {t} ({source.frame_files[t].name}): the RLE cannot be decoded: {error}"
        ) from error


def _endovis_classes(root: Path, sequence_dir: Path) -> dict[tuple[int, int, int], int]:
    for path in (sequence_dir / "labels.json", root / "labels.json"):
        if path.is_file():
            entries = read_json(path, what="EndoVis class file")
            try:
                return {
                    (int(e["color"][0]), int(e["color"][1]), int(e["color"][2])): int(e["classid"]) for e in entries
                }
            except (KeyError, TypeError, ValueError) as error:
                raise InputError(
                    f'EndoVis class file {path}: expected [{{"name", "color", "classid"}}]: {error}'
                ) from error
    raise InputError(f"EndoVis: no labels.json in {sequence_dir} or {root}")


def colour_labels_to_ids(rgb: np.ndarray, classes: dict[tuple[int, int, int], int], *, where: str) -> np.ndarray:
    """Map an RGB class image ``[H, W, 3]`` to class ids ``[H, W]`` uint8; unknown colours are errors."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    labels = np.zeros(packed.shape, np.uint8)
    known = np.zeros(packed.shape, bool)
    for (r, g, b), class_id in classes.items():
        match = packed == (r << 16 | g << 8 | b)
        labels[match] = class_id
        known |= match
    if not known.all():
        y, x = np.argwhere(~known)[0]
        raise InputError(
            f"{where}: pixel ({x}, {y}) has colour {tuple(int(c) for c in rgb[y, x])}, which no class in labels.json has"
        )
    return labels


def read_endovis18(root: Path, split: str | None = None, *, only: Collection[str] | None = None) -> Iterator[Sequence]:
    for name in _subfolders(root, only):
        sequence_dir = root / name
        if not (sequence_dir / "left_frames").is_dir():
            continue
        labels_dir = sequence_dir / "labels"
        if not labels_dir.is_dir():
            raise InputError(f"sequence {name}: labels folder {labels_dir} does not exist")
        classes = _endovis_classes(root, sequence_dir)
        source = VideoSource.open(sequence_dir / "left_frames")
        index_of = {stem: i for i, stem in enumerate(source.frame_names)}
        annotated = {}
        for path in annotation_files(labels_dir):
            if path.stem not in index_of:
                raise InputError(f"sequence {name}: label {path} has no frame named {path.stem} in {source.path}")
            annotated[index_of[path.stem]] = lambda p=path, classes=classes: colour_labels_to_ids(
                read_rgb(p, what="label", label=True), classes, where=str(p)
            )
        if not annotated:
            raise InputError(f"sequence {name}: no label PNG in {labels_dir}")
        sequence = Sequence(name, source, annotated, [], {})
        sequence.obj_ids, sequence.first_frames = _objects_from_annotations(name, sequence)
        yield sequence


READERS: dict[str, Callable[..., Iterator[Sequence]]] = {
    "davis": read_davis,
    "vost": read_vost,
    "pumavos": read_pumavos,
    "lvos": read_lvos,
    "uvo": read_uvo,
    "endovis18": read_endovis18,
}
DEFAULT_SPLITS = {"davis": "val", "vost": "val", "pumavos": None, "lvos": "valid", "uvo": "val", "endovis18": None}


def read_dataset(
    name: str, root: Path, split: str | None = None, *, only: Collection[str] | None = None
) -> Iterator[Sequence]:
    """Sequences of a dataset (see the module docstring for the layouts), each opened when it is
    reached; with ``only``, those sequences, and no other is opened (DAVIS and VOST need no
    sequence list then).

    Raises:
        InputError: unknown dataset name, or missing/malformed files (named).
    """
    if name not in READERS:
        raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if not root.is_dir():
        raise InputError(
            f"--root {root}: {'is a file; expected the dataset folder' if root.is_file() else 'folder does not exist'}"
        )
    return READERS[name](root, split or DEFAULT_SPLITS[name], only=only)
