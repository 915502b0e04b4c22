"""Dataset readers, each on a small fixture built here in the real layout."""

from __future__ import annotations

import functools
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
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(InputError, match=r"--root .*notes\.txt: is a file; expected the dataset folder"):
        read_dataset("davis", tmp_path / "notes.txt")


def _davis(root: Path, frame_labels: list[np.ndarray], name: str = "late") -> None:
    _frames(root / "JPEGImages" / "480p" / name, len(frame_labels))
    masks = root / "Annotations" / "480p" / name
    masks.mkdir(parents=True)
    for i, labels in enumerate(frame_labels):
        write_label_png(masks / f"{i:05d}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text(f"{name}\n")


def test_davis_objects_of_the_count_absent_from_the_first_frame(tmp_path):
    """DAVIS counts objects as the highest id of the first frame: an object of the count that
    enters later is prompted on the frame it enters (it was clicked into an empty mask: a
    ValueError), one that no frame shows is not tracked, and both are scored as the official
    tool scores them."""
    from sam2prune.evaluation.protocol import protocol_prompts, score_tracked_sequence

    frame_labels = [
        _labels({3: (2, 2)}),
        _labels({3: (2, 3)}),
        _labels({1: (12, 12), 3: (2, 4)}),
        _labels({1: (12, 14)}),
    ]
    _davis(tmp_path / "DAVIS", frame_labels)
    (sequence,) = read_dataset("davis", tmp_path / "DAVIS")
    assert sequence.obj_ids == [1, 3] and sequence.first_frames == {1: 2, 3: 0}
    assert [(p.obj_id, p.frame) for p in protocol_prompts(sequence)] == [(1, 2), (3, 0)]
    scores = score_tracked_sequence(sequence, dict(enumerate(frame_labels)))  # perfect labels
    assert [s.name for s in scores] == ["late_1", "late_2", "late_3"]
    assert all(s.j.tolist() == [1.0, 1.0] for s in scores)


def test_annotations_are_listed_as_frames_are(tmp_path):
    """Annotation PNGs: any case of .png, natural order, hidden files (macOS ._ files) skipped,
    in the readers and in ``score``; 1-bit PNGs hold ids 0 and 1 (they were read as void)."""
    from sam2prune.evaluation.davis import score_results

    root = tmp_path / "DAVIS"
    names = [str(i) for i in range(11)]  # unpadded: 10 sorts before 2 as strings
    _frames(root / "JPEGImages" / "480p" / "s", 11, names)
    masks = root / "Annotations" / "480p" / "s"
    masks.mkdir(parents=True)
    results = tmp_path / "results" / "s"
    results.mkdir(parents=True)
    for i, name in enumerate(names):
        labels = _labels({1: (2, 2 + i)})
        Image.fromarray(labels.astype(bool)).save(masks / f"{name}.PNG")  # 1-bit
        write_label_png(results / f"{name}.png", labels if i != 10 else np.zeros_like(labels))
    (masks / "._0.PNG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\ufeffs\ns\n")  # a BOM, a name twice
    assert np.array_equal(read_label_png(masks / "3.PNG"), _labels({1: (2, 5)}))
    (sequence,) = read_dataset("davis", root)
    assert sequence.obj_ids == [1] and sorted(sequence.annotated) == list(range(11))
    # frames 1..9 are scored (10 is the last): all perfect; as strings, 10 was scored and 9 not
    measures, scores = score_results(root, tmp_path / "results", progress=False)
    assert [s.name for s in scores] == ["s_1"] and measures["J-Mean"] == 1.0


def test_a_ground_truth_frame_of_another_size_is_named_by_score(tmp_path):
    from sam2prune.evaluation.davis import score_results

    frame_labels = [_labels({1: (2, 2)})] * 4
    _davis(tmp_path / "DAVIS", frame_labels, name="s")
    results = tmp_path / "results" / "s"
    results.mkdir(parents=True)
    for i, labels in enumerate(frame_labels):
        write_label_png(results / f"{i:05d}.png", labels)
    write_label_png(tmp_path / "DAVIS" / "Annotations" / "480p" / "s" / "00002.png", np.zeros((H, W - 1), np.uint8))
    with pytest.raises(InputError, match=rf"ground truth .*00002\.png is {W - 1}x{H} but 00000\.png is {W}x{H}"):
        score_results(tmp_path / "DAVIS", tmp_path / "results", progress=False)


def test_lvos_start_is_the_first_annotation_from_it_that_shows_the_object(tmp_path):
    root = tmp_path / "LVOS"
    names = [f"{i:08d}" for i in range(6)]
    _frames(root / "valid" / "JPEGImages" / "v", 6, names)
    masks = root / "valid" / "Annotations" / "v"
    masks.mkdir(parents=True)
    for i in (0, 2, 4):  # sparse annotations; object 2 is visible from frame 4
        write_label_png(masks / f"{names[i]}.png", _labels({1: (2, 2)} | ({2: (12, 12)} if i == 4 else {})))
    meta = {
        "videos": {
            "v": {"objects": {"1": {"frame_range": {"start": "00000000.jpg"}}, "2": {"frame_range": {"start": 1}}}}
        }
    }
    (root / "valid" / "valid_meta.json").write_text(json.dumps(meta))
    (sequence,) = read_dataset("lvos", root)
    assert sequence.first_frames == {1: 0, 2: 4}
    meta["videos"]["v"]["objects"]["3"] = {"frame_range": {"start": 2}}
    (root / "valid" / "valid_meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        InputError, match=r"video v, object 3 starts at frame 2 \(meta\), but no annotation from there on shows it"
    ):
        list(read_dataset("lvos", root))


def test_uvo_objects_and_errors_name_the_video_object_and_frame(tmp_path):
    from pycocotools import mask as coco_mask

    root = tmp_path / "UVO"
    _frames(root / "JPEGImages" / "vidA", 3)

    def rle(mask):
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}

    empty, square = np.zeros((H, W), bool), _labels({1: (2, 2)}) == 1
    video = {"id": 7, "file_names": [f"vidA/{i:05d}.jpg" for i in range(3)], "height": H, "width": W}
    annotations = [{"id": 1, "video_id": 7, "segmentations": [rle(empty), rle(square), None]}]

    def read(videos=(video,), annotations=annotations):
        (root / "val.json").write_text(json.dumps({"videos": list(videos), "annotations": annotations}))
        return list(read_dataset("uvo", root))

    (sequence,) = read()  # an empty RLE on its first segmentation: visible from frame 1
    assert sequence.first_frames == {1: 1}
    for segmentations, message in (
        (
            [rle(square[:-1]), None, None],
            rf"UVO video 7, object 1, frame 0 \(00000\.jpg\): the RLE is of size \[{H - 1}, {W}\]",
        ),
        ([[[1, 2, 3, 4, 5, 6]], None, None], r"object 1, frame 0 \(00000\.jpg\): expected a COCO RLE"),
        (
            [{"size": [H, W], "counts": [1, 2]}, None, None],
            r"frame 0 \(00000\.jpg\): the RLE cannot be decoded: RLE counts sum to 3",
        ),
        ([None, None], r"UVO video 7, object 1: 2 segmentations for 3 frames"),
        # a frame after the first visible one: refused as the video is read, not once it is tracked
        (
            [None, rle(square), rle(square[:, :-1])],
            rf"UVO video 7, object 1, frame 2 \(00002\.jpg\): the RLE is of size \[{H}, {W - 1}\]",
        ),
    ):
        with pytest.raises(InputError, match=message):
            read(annotations=[{"id": 1, "video_id": 7, "segmentations": segmentations}])
    with pytest.raises(
        InputError, match=rf"UVO video 7: frame .*00000\.jpg is {W}x{H} but .*val\.json gives {W}x{H + 1}"
    ):
        read(videos=[video | {"height": H + 1}])
    with pytest.raises(InputError, match="UVO video 7: file_names is empty"):
        read(videos=[video | {"file_names": []}])
    # label maps are uint8 with 255 as void: object 255 was void, 256 an OverflowError
    many = [{"id": i, "video_id": 7, "segmentations": [rle(square), None, None]} for i in range(1, 256)]
    assert read(annotations=many[:254])[0].obj_ids[-1] == 254
    with pytest.raises(
        InputError, match=r"UVO video 7 \(vidA\) has 255 annotated objects; label maps hold object ids 1..254"
    ):
        read(annotations=many)
    with pytest.raises(InputError, match=r'expected each video as \{"id", "file_names", "width", "height"\}'):
        read(videos=[{"id": 7}])
    # a broken video that is not asked for is not checked
    broken = {"id": 8, "file_names": ["vidB/00000.jpg"]}
    (root / "val.json").write_text(json.dumps({"videos": [video, broken], "annotations": annotations}))
    assert [s.name for s in read_dataset("uvo", root, only=["vidA"])] == ["vidA"]


def test_endovis18_labels_that_match_no_frame_or_cannot_be_read_are_named(tmp_path):
    root = tmp_path / "EndoVis"
    _frames(root / "seq_1" / "left_frames", 2, ["frame000", "frame001"], suffix=".png")
    (root / "labels.json").write_text(json.dumps([{"name": "bg", "color": [0, 0, 0], "classid": 0}]))
    with pytest.raises(InputError, match=r"sequence seq_1: labels folder .*labels does not exist"):
        list(read_dataset("endovis18", root))
    (root / "seq_1" / "labels").mkdir()
    (root / "seq_1" / "labels" / "frame007.png").write_bytes(b"not a PNG")
    with pytest.raises(InputError, match=r"label .*frame007\.png has no frame named frame007"):
        list(read_dataset("endovis18", root))
    (root / "seq_1" / "labels" / "frame007.png").rename(root / "seq_1" / "labels" / "frame001.png")
    with pytest.raises(InputError, match=r"label .*frame001\.png is corrupt or unreadable"):
        list(read_dataset("endovis18", root))


def test_hidden_folders_are_no_sequences_and_named_ones_are_the_only_ones_opened(tmp_path):
    root = tmp_path / "PUMaVOS"
    for name in ("a", "b"):
        _frames(root / "JPEGImages" / name, 2)
        (root / "Annotations" / name).mkdir(parents=True)
        write_label_png(root / "Annotations" / name / "00000.png", _labels({1: (2, 2)}))
    (root / "Annotations" / ".ipynb_checkpoints").mkdir()
    assert [s.name for s in read_dataset("pumavos", root)] == ["a", "b"]
    shutil.rmtree(root / "JPEGImages" / "b")  # b cannot be opened: only a is asked for
    assert [s.name for s in read_dataset("pumavos", root, only=["a"])] == ["a"]


_READS: list[int] = []


def _square_at(column: int) -> np.ndarray:
    _READS.append(column)
    return _labels({1: (2, column)})


def test_a_sequence_keeps_few_label_maps_and_pickles_none():
    import pickle

    from sam2prune.data.datasets import GROUND_TRUTH_CACHE, Sequence
    from sam2prune.data.video import VideoSource

    source = VideoSource(Path("nowhere"), [f"{i}" for i in range(10)], W, H)
    annotated = {i: functools.partial(_square_at, i) for i in range(10)}
    sequence = Sequence("s", source, annotated, [1], {1: 0})
    _READS.clear()
    for i in range(10):
        sequence.ground_truth(i)
    sequence.ground_truth(9)
    assert len(sequence._cache) == GROUND_TRUTH_CACHE and list(range(10)) == _READS
    copy = pickle.loads(pickle.dumps(sequence))
    assert not copy._cache and np.array_equal(copy.ground_truth(3), _labels({1: (2, 3)}))


def test_scoring_reads_each_label_map_once_for_every_object():
    """With a few label maps kept, scoring object by object read every annotation again for
    each object (UVO decodes every object's RLE for each): now each is read once."""
    from sam2prune.data.datasets import Sequence
    from sam2prune.data.video import VideoSource
    from sam2prune.evaluation.protocol import score_tracked_sequence

    source = VideoSource(Path("nowhere"), [f"{i}" for i in range(10)], W, H)
    annotated = {i: functools.partial(_square_at, i) for i in range(10)}
    sequence = Sequence("s", source, annotated, [1, 2, 3], {1: 0, 2: 1, 3: 4})
    _READS.clear()
    scores = score_tracked_sequence(sequence, {i: _labels({1: (2, i)}) for i in range(10)})
    assert sorted(_READS) == list(range(1, 10))  # frame 0 scores no object (prompted there)
    assert [len(s.j) for s in scores] == [9, 8, 5] and scores[0].j.tolist() == [1.0] * 9


def test_limit_opens_only_the_first_sequences(tmp_path):
    """--limit N opens the first N sequences only: a later one not downloaded stops nothing."""
    from sam2prune.cli.common import DataSelection, select_sequences

    _davis(tmp_path / "DAVIS", [_labels({1: (2, 2)})] * 3, name="first")
    (tmp_path / "DAVIS" / "ImageSets" / "2017" / "val.txt").write_text("first\nnot-downloaded\n")
    selection = DataSelection(dataset="davis", root=tmp_path / "DAVIS", split=None, sequences=None, limit=1)
    assert [s.name for s in select_sequences(selection)] == ["first"]
    with pytest.raises(InputError, match="sequence not-downloaded: frames folder"):
        select_sequences(DataSelection(dataset="davis", root=tmp_path / "DAVIS", split=None, sequences=None, limit=2))
