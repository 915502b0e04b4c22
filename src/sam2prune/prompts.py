"""User prompts (clicks, boxes, masks) per object and frame: parsing, checking, applying."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import numpy as np

from sam2prune.data.palette import read_label_png
from sam2prune.errors import InputError
from sam2prune.fsutil import read_json

if TYPE_CHECKING:
    from sam2.sam2_video_predictor import SAM2VideoPredictor

VOID_LABEL = 255


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompt of one object on one frame, in pixel coordinates of the original frames.

    Attributes:
        obj_id: object id, 1..254 (the value it gets in the output PNGs).
        frame: index of the frame the prompt belongs to.
        points: ``[(x, y), ...]`` clicks; ``labels`` gives 1 (positive) or 0 (negative) each.
        box: ``(x0, y0, x1, y1)`` or None.
        mask: ``[H, W]`` bool or None (then points and box are empty).
        source: where the prompt came from, for error messages (an argument or file).
        mask_file: the PNG ``mask`` was read from, or None.
    """

    obj_id: int
    frame: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None
    source: str = "prompt"
    mask_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.points and self.box is None and self.mask is None:
            raise InputError(f"{self.source}: object {self.obj_id} has no point, box or mask")
        if self.mask is not None and (self.points or self.box is not None):
            raise InputError(
                f"{self.source}: object {self.obj_id} has a mask and points/box on the same frame; "
                "give one kind of prompt per object and frame"
            )
        if len(self.points) != len(self.labels):
            raise InputError(
                f"{self.source}: object {self.obj_id} has {len(self.points)} points but {len(self.labels)} labels"
            )


@overload
def parse_numbers(text: str, count: Literal[2], *, argument: str) -> tuple[float, float]: ...
@overload
def parse_numbers(text: str, count: Literal[4], *, argument: str) -> tuple[float, float, float, float]: ...
def parse_numbers(text: str, count: int, *, argument: str) -> tuple[float, ...]:
    """Parse ``"X,Y"`` style arguments.

    Raises:
        InputError: naming the argument and the expected form.
    """
    parts = text.split(",")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(np.isfinite(values)):
        expected = {2: "X,Y", 4: "X0,Y0,X1,Y1"}[count]
        raise InputError(f"{argument} {text!r}: expected {expected} (numbers in pixels)")
    return values


def masks_from_png(path: Path, *, obj_id: int | None, frame: int, source: str) -> list[ObjectPrompt]:
    """Object masks of a PNG. A plain mask (its pixels 0 and 1, or 0 and 255) is object
    ``obj_id`` (default 1). Otherwise it is a label map (e.g. a DAVIS annotation), whose values
    are object ids: one object per id, or only ``obj_id`` if given. In an indexed-palette label
    PNG, pixels of value 255 are void when other ids are present; a greyscale PNG (or an indexed
    PNG whose colours are the greys of its values) holding 255 and other values is a soft mask
    (255 its foreground, the others its anti-aliased edges), not a label map, and is refused.

    Raises:
        InputError: the PNG cannot be read, is empty, is a soft greyscale mask, or has no pixel
            of ``obj_id``.
    """
    from PIL import Image

    try:
        labels = read_label_png(path)
        with Image.open(path) as image:
            colours = image.getpalette() if image.mode == "P" else None
    except InputError as error:
        raise InputError(f"{source}: {error}") from None
    values = [int(v) for v in np.unique(labels) if v != 0]
    # an indexed PNG whose colour for each value is the grey of that value is a greyscale
    # picture saved with a palette (as some tools save masks), not a label map
    grey_palette = colours is not None and all(colours[3 * v : 3 * v + 3] == [v, v, v] for v in values)
    if (colours is None or grey_palette) and VOID_LABEL in values and len(values) > 1:
        # a greyscale 255 is a mask's foreground, not void: other values beside it are its soft
        # edges (a label map of ids written as grey values has no 255)
        kind = "an indexed PNG of grey colours" if grey_palette else "a greyscale PNG"
        shown = np.unique(labels).tolist()
        raise InputError(
            f"{source}: mask {path} is {kind} with the values "
            f"{', '.join(map(str, shown[:8]))}{', ...' if len(shown) > 8 else ''}: a soft or anti-aliased mask, "
            "255 with other values; a greyscale mask is one object of 0 and 255 (or 0 and 1), or object ids "
            "1..254 without 255: threshold it (e.g. 255 where >= 128, else 0)"
        )
    if len(values) > 1:
        values = [v for v in values if v != VOID_LABEL]
    if not values:
        raise InputError(f"{source}: mask {path} is empty (no non-zero pixel)")
    if values in ([1], [VOID_LABEL]):  # a plain mask: it names no object
        return [
            ObjectPrompt(
                obj_id=1 if obj_id is None else obj_id,
                frame=frame,
                mask=labels == values[0],
                source=source,
                mask_file=path,
            )
        ]
    if obj_id is not None:
        if obj_id not in values:
            raise InputError(
                f"{source}: mask {path} is a label map with no pixel of object {obj_id} (its ids: {values}); "
                "leave the object id out to take its ids, or give a plain mask (0 and 255) to name its object"
            )
        values = [obj_id]
    return [ObjectPrompt(obj_id=v, frame=frame, mask=labels == v, source=source, mask_file=path) for v in values]


def prompts_file_inputs(path: Path, prompts: Sequence[ObjectPrompt]) -> list[tuple[str, Path]]:
    """What a run reads because of a prompts file (its ``prompts``), as ``(name, path)`` for the
    output checks (``fsutil.check_output_dir``/``check_output_file``): the file and each mask PNG
    it names."""
    masks = dict.fromkeys(prompt.mask_file for prompt in prompts if prompt.mask_file is not None)
    return [("--prompts", path), *((f"mask of --prompts {path}", mask) for mask in masks)]


def prompts_from_arguments(
    *,
    points: list[str],
    negatives: list[str],
    box: str | None,
    mask: Path | None,
    frame: int,
    obj_id: int | None,
) -> list[ObjectPrompt]:
    """Prompts of the ``--point/--neg/--box/--mask/--frame/--obj-id`` command-line options."""
    if mask is not None:
        if points or negatives or box:
            raise InputError("--mask cannot be combined with --point, --neg or --box")
        return masks_from_png(mask, obj_id=obj_id, frame=frame, source="--mask")
    clicks = [parse_numbers(p, 2, argument="--point") for p in points]
    clicks += [parse_numbers(p, 2, argument="--neg") for p in negatives]
    labels = [1] * len(points) + [0] * len(negatives)
    parsed_box = parse_numbers(box, 4, argument="--box") if box else None
    if not clicks and parsed_box is None:
        return []
    if parsed_box is None and not points:
        raise InputError("--neg needs at least one --point or a --box: negative clicks alone select nothing")
    return [
        ObjectPrompt(
            obj_id=1 if obj_id is None else obj_id,
            frame=frame,
            points=tuple(clicks),
            labels=tuple(labels),
            box=parsed_box,
            source=CLICK_OPTIONS,
        )
    ]


CLICK_OPTIONS = "--point/--neg/--box"  # the source of the command line's clicks and box


def load_prompts_file(path: Path) -> list[ObjectPrompt]:
    """Read a prompts JSON file::

        {"objects": [
            {"obj_id": 1, "frame": 0, "points": [[x, y], ...], "labels": [1, 0, ...]},
            {"obj_id": 2, "frame": 5, "box": [x0, y0, x1, y1]},
            {"obj_id": 3, "frame": 8, "mask": "masks/00008.png"}
        ]}

    ``labels`` defaults to all positive; ``obj_id`` to 1 (for a mask: to the ids of a label
    map, see ``masks_from_png``); mask paths are relative to the JSON file. A bare list of
    objects is accepted too.

    Raises:
        InputError: naming the file and the entry that is malformed.
    """
    payload = read_json(path, what="prompts file")
    if isinstance(payload, dict) and (unknown := set(payload) - {"objects"}):
        raise InputError(f'prompts file {path}: unknown keys {sorted(unknown)} (expected {{"objects": [...]}})')
    entries = payload.get("objects") if isinstance(payload, dict) else payload
    if not isinstance(entries, list) or not entries:
        raise InputError(f'prompts file {path}: expected {{"objects": [...]}} with at least one object')
    prompts: list[ObjectPrompt] = []
    for number, entry in enumerate(entries):
        where = f"prompts file {path}, objects[{number}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object with obj_id, frame and points/box/mask")
        unknown = set(entry) - {"obj_id", "frame", "points", "labels", "box", "mask"}
        if unknown:
            raise InputError(f"{where}: unknown keys {sorted(unknown)}")
        frame = _integer(entry.get("frame", 0), f"{where}: frame")
        if "mask" in entry:
            if "points" in entry or "box" in entry:
                raise InputError(f"{where}: give either mask or points/box, not both")
            mask_path = Path(path).parent / str(entry["mask"])
            mask_id = _integer(entry["obj_id"], f"{where}: obj_id") if "obj_id" in entry else None
            prompts += masks_from_png(mask_path, obj_id=mask_id, frame=frame, source=where)
            continue
        obj_id = _integer(entry.get("obj_id", 1), f"{where}: obj_id")
        points = entry.get("points", [])
        if not isinstance(points, list) or not all(_is_pair(p) for p in points):
            raise InputError(f"{where}: points must be a list of [x, y] pairs")
        labels = entry.get("labels", [1] * len(points))
        if not isinstance(labels, list) or any(label not in (0, 1) for label in labels):
            raise InputError(f"{where}: labels must be a list of 1 (positive) or 0 (negative)")
        box = entry.get("box")
        if box is not None and not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise InputError(f"{where}: box must be [x0, y0, x1, y1]")
        prompts.append(
            ObjectPrompt(
                obj_id=obj_id,
                frame=frame,
                points=tuple((float(x), float(y)) for x, y in points),
                labels=tuple(int(label) for label in labels),
                box=tuple(float(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
                source=where,
            )
        )
    return prompts


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _is_pair(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be an integer, got {value!r}")
    return value


def check_prompts(prompts: list[ObjectPrompt], *, num_frames: int, width: int, height: int) -> None:
    """Check prompts against the video.

    Raises:
        InputError: naming the prompt whose frame, object id, point, box or mask does not fit.
    """
    seen: set[tuple[int, int]] = set()
    for prompt in prompts:
        where = f"{prompt.source}: object {prompt.obj_id}"
        if not 1 <= prompt.obj_id <= 254:
            raise InputError(f"{prompt.source}: object id {prompt.obj_id} must be in 1..254 (PNG label values)")
        if not 0 <= prompt.frame < num_frames:
            raise InputError(
                f"{where}: frame {prompt.frame} is out of range; the video has {num_frames} frames (0..{num_frames - 1})"
            )
        if (prompt.obj_id, prompt.frame) in seen:
            raise InputError(f"{where} has two prompts on frame {prompt.frame}; merge them into one entry")
        seen.add((prompt.obj_id, prompt.frame))
        for (x, y), label in zip(prompt.points, prompt.labels, strict=True):
            if not (0 <= x < width and 0 <= y < height):
                # the command line's options: the one the point came from
                option = ("--point" if label else "--neg") if prompt.source == CLICK_OPTIONS else prompt.source
                raise InputError(
                    f"{option}: object {prompt.obj_id}: {'point' if label else 'negative click'} ({x:g}, {y:g}) is "
                    f"outside the {width}x{height} image (0 <= x < {width}, 0 <= y < {height})"
                )
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                source = "--box" if prompt.source == CLICK_OPTIONS else prompt.source
                raise InputError(
                    f"{source}: object {prompt.obj_id}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must satisfy 0 <= x0 < x1 <= {width} "
                    f"and 0 <= y0 < y1 <= {height}"
                )
        if prompt.mask is not None and prompt.mask.shape != (height, width):
            raise InputError(
                f"{where}: mask is {prompt.mask.shape[1]}x{prompt.mask.shape[0]} but the frames are {width}x{height}"
            )
    first: dict[int, ObjectPrompt] = {}
    for prompt in sorted(prompts, key=lambda p: p.frame):
        first.setdefault(prompt.obj_id, prompt)
    for prompt in first.values():  # corrections on later frames may be negative clicks alone
        if prompt.mask is None and prompt.box is None and 1 not in prompt.labels:
            raise InputError(
                f"{prompt.source}: object {prompt.obj_id} starts on frame {prompt.frame} with negative clicks "
                "alone, which select nothing to track; add a positive click, a box or a mask there"
            )


def apply_prompts(
    predictor: SAM2VideoPredictor, inference_state: dict, prompts: list[ObjectPrompt]
) -> dict[int, np.ndarray]:
    """Add every prompt to an inference session (``add_new_points_or_box`` / ``add_new_mask``).

    Returns:
        Per object id, SAM 2's mask (``[H, W]`` bool, video resolution) on the frame of its
        first prompt.
    """
    first_masks: dict[int, np.ndarray] = {}
    for prompt in sorted(prompts, key=lambda p: (p.frame, p.obj_id)):
        if prompt.mask is not None:
            _, obj_ids, masks = predictor.add_new_mask(inference_state, prompt.frame, prompt.obj_id, prompt.mask)
        else:
            _, obj_ids, masks = predictor.add_new_points_or_box(
                inference_state,
                prompt.frame,
                prompt.obj_id,
                points=np.array(prompt.points, dtype=np.float32) if prompt.points else None,
                labels=np.array(prompt.labels, dtype=np.int32) if prompt.points else None,
                box=np.array(prompt.box, dtype=np.float32) if prompt.box is not None else None,
            )
        if prompt.obj_id not in first_masks:
            row = list(obj_ids).index(prompt.obj_id)
            first_masks[prompt.obj_id] = (masks[row, 0] > 0).cpu().numpy()
    return first_masks
