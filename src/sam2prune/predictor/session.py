"""Per-video state of sam2prune, kept on sam2's inference state (never on the ``nn.Module``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from sam2prune.predictor.bank import SparseMemoryBank
from sam2prune.predictor.static_step import StaticSteps

SESSION_KEY = "sam2prune"  # the one key sam2prune adds to sam2's inference-state dict


@dataclass
class FrameCache:
    """What pruning computes from a frame's tokens alone (the visual context, the tokens
    projected into text space, the fill of dropped positions): sam2 tracks the objects of a
    frame one at a time, so it is computed for the first object and reused for the others.

    Holds one frame at a time: asking for another frame drops the previous frame's entries (sam2
    tracks every object on a frame before it moves on, and caches one frame's features too).
    Keys name what is computed and from what (shape, dtype, the module or scorer computing it).
    """

    frame_idx: int | None = None
    entries: dict[Hashable, torch.Tensor] = field(default_factory=dict)

    def get(self, frame_idx: int, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The value of ``key`` on frame ``frame_idx``: ``compute()`` the first time."""
        if frame_idx != self.frame_idx:
            self.frame_idx, self.entries = frame_idx, {}
        if key not in self.entries:
            self.entries[key] = compute()
        return self.entries[key]


@dataclass
class TrackingSession:
    """What one inference session holds besides sam2's own state.

    Attributes:
        num_tokens: N, tokens per frame of the memory grid.
        bounded_memory: drop what no later frame can read as tracking moves on (see
            ``SparseMemoryBank``); False keeps every frame's outputs, as sam2 does.
        banks: the memory bank of each object, by object id.
        object_texts: the description of each object for the text signal, by object id.
        uncertainty: the token uncertainty ``[1, N]`` of the frames whose image features are
            cached (sam2 caches the last encoded frame), by (the predictor's
            ``pruning_generation``, frame index); computed with those features (None when no
            probed encoder block ran).
        masks_kept_below: with bounded memory, the mask logits of frames below this index are
            kept for whoever reads them back (``SAM2Predictor.keep_masks_below``).
        peak_memory_bank_bytes, peak_held_bytes: the largest totals over all objects seen after
            any tracked frame (what memory attention reads back; everything the outputs hold).
        frame_cache: per-frame results shared by the objects tracked on the frame.
        static_steps: the buffers (and CUDA graphs) of the static-shape tracking step of each
            group of objects tracked together (``PrunedSAM2VideoPredictor.static_step``).
    """

    num_tokens: int
    bounded_memory: bool = False
    banks: dict[int, SparseMemoryBank] = field(default_factory=dict)
    object_texts: dict[int, str] = field(default_factory=dict)
    uncertainty: dict[tuple[int, int], torch.Tensor | None] = field(default_factory=dict)
    masks_kept_below: int = 0
    peak_memory_bank_bytes: int = 0
    peak_held_bytes: int = 0
    # output dicts being tracked again (bounded memory), by id: (the dict, its bank, object id,
    # the text it was tracked with or None)
    _replays: dict[int, tuple[dict, SparseMemoryBank, int, str | None]] = field(default_factory=dict)
    frame_cache: FrameCache = field(default_factory=FrameCache)
    static_steps: StaticSteps = field(default_factory=StaticSteps)

    @property
    def replaying(self) -> bool:
        return bool(self._replays)

    def object_id(self, inference_state: dict, output_dict: dict) -> int:
        """The id of the object whose sam2 per-object output dict this is (sam2's internals
        pass the dict, not the object)."""
        replay = self._replays.get(id(output_dict))
        if replay is not None and replay[0] is output_dict:
            return replay[2]
        for obj_idx, candidate in inference_state["output_dict_per_obj"].items():
            if candidate is output_dict:
                return inference_state["obj_idx_to_id"][obj_idx]
        raise KeyError("this output dict belongs to no object of the session")

    def bank(self, inference_state: dict, obj_id: int) -> SparseMemoryBank:
        """The memory bank of an object (a new one if the object is new, or was removed and
        added again)."""
        output_dict = inference_state["output_dict_per_obj"][inference_state["obj_id_to_idx"][obj_id]]
        bank = self.banks.get(obj_id)
        if bank is None or bank.output_dict is not output_dict:
            bank = self.banks[obj_id] = SparseMemoryBank(output_dict, self.num_tokens)
        return bank

    def bank_of(self, inference_state: dict, output_dict: dict) -> SparseMemoryBank:
        """The bank of an output dict: an object's, or one being tracked again."""
        replay = self._replays.get(id(output_dict))
        if replay is not None and replay[0] is output_dict:
            return replay[1]
        return self.bank(inference_state, self.object_id(inference_state, output_dict))

    @contextmanager
    def replay(
        self, output_dict: dict, bank: SparseMemoryBank, obj_id: int, *, text: str | None = None
    ) -> Iterator[None]:
        """While inside, ``output_dict`` (a scratch copy of an object's memories) is tracked with
        ``bank`` as the object ``obj_id``, described by ``text`` where one was read (the text
        its frames were first tracked with, which may have changed since)."""
        self._replays[id(output_dict)] = (output_dict, bank, obj_id, text)
        try:
            yield
        finally:
            del self._replays[id(output_dict)]

    def object_text(self, obj_id: int, default: str | None) -> str | None:
        """The object's text for the text signal: while it is tracked again, the one its frames
        were tracked with; otherwise the one set for it, or ``default``."""
        replayed = next((text for _, _, replayed_id, text in self._replays.values() if replayed_id == obj_id), None)
        return replayed if replayed is not None else self.object_texts.get(obj_id, default)

    def forget_object(self, obj_id: int) -> None:
        """Drop the bank and the text of a removed object, as sam2 drops everything else of it
        (a text set for an object not added yet stays)."""
        self.banks.pop(obj_id, None)
        self.object_texts.pop(obj_id, None)

    def note_peak(self) -> None:
        """Take the current totals of every bank into the peaks."""
        totals = [bank.held_bytes for bank in self.banks.values()]
        self.peak_memory_bank_bytes = max(self.peak_memory_bank_bytes, sum(t.attended for t in totals))
        self.peak_held_bytes = max(self.peak_held_bytes, sum(t.held for t in totals))


def tracking_session(inference_state: dict, num_tokens: int) -> TrackingSession:
    """The session's state (created on first use, keeping everything, as sam2 does)."""
    session = inference_state.get(SESSION_KEY)
    if session is None:
        session = inference_state[SESSION_KEY] = TrackingSession(num_tokens)
    return session
