"""Dataset readers, each on a small fixture built here in the real layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2prune.data.datasets import decode_coco_rle, read_dataset
from sam2prune.data.palette import read_label_png, write_label_png
from sam2prune.errors import InputError

from conftest import CHAIR_FRAMES, CHAIR_MASKS

H, W = 24, 32


def _frames(folder: Path, count: int, names=None, suffix=".jpg") -> list[str]:
    folder.mkdir(parents=True)
    names = names or [f"{i:05d}" for i in range(count)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((H, W, 3), 10 * i, np.uint8)).save(folder / f"{name}{suffix}")
    return names


def _labels(objects: dict[int, tuple[int, int]]) -> np.ndarray:
    """A label map with object id -> (row, col) of a 4x4 square."""
    labels = np.zeros((H, W), np.uint8)
    for obj_id, (row, col) in objects.items():
        labels[row : row + 4, col : col + 4] = obj_id
    return labels


def test_davis_reader_on_the_real_chair_clip(tmp_path):
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    (sequence,) = read_dataset("davis", root)
    assert sequence.name == "chair" and len(sequence.source) == 6 and sequence.official_davis
    assert sequence.obj_ids == [1] and sequence.first_frames == {1: 0}
    assert sorted(sequence.annotated) == list(range(6))
    assert np.array_equal(sequence.ground_truth(3), read_label_png(CHAIR_MASKS / "00003.png"))
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\nmissing\n")
    with pytest.raises(InputError, match="missing"):
        list(read_dataset("davis", root))
    # DAVIS scores every frame: a frame without annotation is named before any tracking
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    (root / "Annotations" / "480p" / "chair" / "00003.png").unlink()
    with pytest.raises(InputError, match=r"sequence chair: 1 of its 6 frames have no annotation in .* \(00003\)"):
        list(read_dataset("davis", root))


def test_named_sequences_need_no_list_and_only_they_are_read(tmp_path):
    root = tmp_path / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    with pytest.raises(
        InputError,
        match=r"val\.txt does not exist \(.*2017 holds no list\); pass --split NAME of a list there, or name the sequences: --sequences NAME",
    ):
        list(read_dataset("davis", root))
    (sequence,) = read_dataset("davis", root, only=["chair"])
    assert sequence.name == "chair" and sequence.obj_ids == [1]
    with pytest.raises(InputError, match=r"sequence swan: frames folder .* does not exist"):
        list(read_dataset("davis", root, only=["swan"]))
    # with a list: the named ones among it; another sequence, broken, is not read
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("broken\nchair\n")
    (root / "JPEGImages" / "480p" / "broken").mkdir()
    assert [s.name for s in read_dataset("davis", root, only=["chair"])] == ["chair"]
    with pytest.raises(InputError, match=r"--sequences: swan not in .*val\.txt \(2 sequences\)"):
        list(read_dataset("davis", root, only=["chair", "swan"]))


def test_vost_sparse_annotations_and_late_objects(tmp_path):
    root = tmp_path / "VOST"
    _frames(root / "JPEGImages" / "cut_onion", 6)
    masks = root / "Annotations" / "cut_onion"
    masks.mkdir(parents=True)
    write_label_png(masks / "00000.png", _labels({1: (2, 2)}))
    write_label_png(masks / "00002.png", _labels({1: (2, 4), 2: (12, 20)}))
    write_label_png(masks / "00004.png", _labels({2: (12, 22)}))
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text("cut_onion\n")
    (sequence,) = read_dataset("vost", root)
    assert sorted(sequence.annotated) == [0, 2, 4]
    assert sequence.obj_ids == [1, 2] and sequence.first_frames == {1: 0, 2: 2}
    assert not sequence.official_davis
    (sequence,) = read_dataset("pumavos", root)  # the same layout without image sets
    assert sequence.first_frames == {1: 0, 2: 2}


def test_annotation_without_a_frame_is_named(tmp_path):
    root = tmp_path / "P"
    _frames(root / "JPEGImages" / "s", 2)
    (root / "Annotations" / "s").mkdir(parents=True)
    write_label_png(root / "Annotations" / "s" / "00007.png", _labels({1: (0, 0)}))
    with pytest.raises(InputError, match=r"00007\.png has no frame named 00007"):
        list(read_dataset("pumavos", root))


def test_lvos_meta_gives_late_first_frames(tmp_path):
    root = tmp_path / "LVOS"
    names = [f"{i:08d}" for i in range(0, 30, 5)]
    _frames(root / "valid" / "JPEGImages" / "longvid", 6, names)
    masks = root / "valid" / "Annotations" / "longvid"
    masks.mkdir(parents=True)
    for i, name in enumerate(names):
        write_label_png(masks / f"{name}.png", _labels({1: (2, 2)} | ({2: (12, 12)} if i >= 3 else {})))
    meta = {
        "videos": {
            "longvid": {
                "objects": {
                    "1": {"frame_range": {"start": "00000000", "end": "00000025", "frame_nums": 6}},
                    "2": {"frame_range": {"start": 15, "end": 25, "frame_nums": 3}},
                }
            }
        }
    }
    (root / "valid" / "valid_meta.json").write_text(json.dumps(meta))
    (sequence,) = read_dataset("lvos", root)
    assert sequence.obj_ids == [1, 2] and sequence.first_frames == {1: 0, 2: 3}
    meta["videos"]["longvid"]["objects"]["2"]["frame_range"]["start"] = 16
    (root / "valid" / "valid_meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="starts at frame 16"):
        list(read_dataset("lvos", root))
    (root / "valid" / "valid_meta.json").write_text("{broken")
    with pytest.raises(InputError, match=r"valid_meta\.json is not valid JSON"):
        list(read_dataset("lvos", root))


def test_coco_rle_decoding_matches_pycocotools():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((17, 23)) < 0.4
        mask[3:9, 5:15] = True  # long runs exercise the multi-chunk counts
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        compressed = {"size": encoded["size"], "counts": encoded["counts"].decode()}
        assert np.array_equal(decode_coco_rle(compressed), coco_mask.decode(encoded).astype(bool))
        assert np.array_equal(decode_coco_rle(compressed), mask)
    # uncompressed counts, as YouTube-VIS style files also hold
    assert decode_coco_rle({"size": [2, 3], "counts": [1, 2, 3]}).tolist() == [
        [False, True, False],
        [True, False, False],
    ]


def test_uvo_reader(tmp_path):
    from pycocotools import mask as coco_mask

    root = tmp_path / "UVO"
    _frames(root / "JPEGImages" / "vidA", 3)

    def rle(labels, obj_id):
        encoded = coco_mask.encode(np.asfortranarray((labels == obj_id).astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}

    frame_labels = [_labels({1: (2, 2)}), _labels({1: (2, 3), 2: (10, 10)}), _labels({2: (10, 12)})]
    payload = {
        "videos": [{"id": 7, "file_names": [f"vidA/{i:05d}.jpg" for i in range(3)], "height": H, "width": W}],
        "annotations": [
            {
                "id": 1,
                "video_id": 7,
                "category_id": 1,
                "segmentations": [rle(frame_labels[0], 1), rle(frame_labels[1], 1), None],
            },
            {
                "id": 2,
                "video_id": 7,
                "category_id": 1,
                "segmentations": [None, rle(frame_labels[1], 2), rle(frame_labels[2], 2)],
            },
        ],
    }
    (root / "val.json").write_text(json.dumps(payload))
    (sequence,) = read_dataset("uvo", root)
    assert sequence.name == "vidA" and sequence.obj_ids == [1, 2] and sequence.first_frames == {1: 0, 2: 1}
    for t in range(3):
        assert np.array_equal(sequence.ground_truth(t), frame_labels[t])
    (root / "UVO_sparse_val.json").write_text(json.dumps(payload))
    assert [s.name for s in read_dataset("uvo", root, "UVO_sparse_val.json")] == ["vidA"]
    with pytest.raises(InputError, match=r"does not exist|do not exist"):
        list(read_dataset("uvo", root, "test"))


def test_endovis18_colour_classes_become_object_ids(tmp_path):
    root = tmp_path / "EndoVis"
    names = [f"frame{i:03d}" for i in range(3)]
    _frames(root / "seq_1" / "left_frames", 3, names, suffix=".png")
    (root / "seq_1" / "labels").mkdir(parents=True)
    classes = [
        {"name": "background-tissue", "color": [0, 255, 0], "classid": 0},
        {"name": "instrument-shaft", "color": [0, 255, 255], "classid": 1},
        {"name": "kidney-parenchyma", "color": [255, 55, 0], "classid": 4},
    ]
    (root / "labels.json").write_text(json.dumps(classes))
    for i, name in enumerate(names):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[:] = (0, 255, 0)
        rgb[2:6, 2:6] = (0, 255, 255)
        if i >= 1:
            rgb[10:20, 10:20] = (255, 55, 0)
        Image.fromarray(rgb).save(root / "seq_1" / "labels" / f"{name}.png")
    (sequence,) = read_dataset("endovis18", root)
    assert sequence.obj_ids == [1, 4] and sequence.first_frames == {1: 0, 4: 1}
    assert set(np.unique(sequence.ground_truth(2))) == {0, 1, 4}
    rgb = np.asarray(Image.open(root / "seq_1" / "labels" / "frame002.png")).copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(root / "seq_1" / "labels" / "frame002.png")
    with pytest.raises(InputError, match=r"frame002.png: pixel \(0, 0\) has colour \(1, 2, 3\)"):
        list(read_dataset("endovis18", root))


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'kitti'"):
        read_dataset("kitti", tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_dataset("davis", tmp_path / "nowhere")
