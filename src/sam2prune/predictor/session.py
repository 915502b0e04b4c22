"""Per-video pruning state, kept on sam2's inference state (never on the ``nn.Module``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from sam2prune.predictor.bank import SparseMemoryBank

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
class PruningSession:
    """What one inference session holds for pruning, besides sam2's own state.

    Attributes:
        num_tokens: N, tokens per frame of the memory grid.
        banks: the memory bank of each object, by object id.
        object_texts: the description of each object for the text signal, by object id.
        uncertainty: the token uncertainty ``[1, N]`` of the frames whose image features are
            cached (sam2 caches the last encoded frame); computed with those features.
        frame_cache: per-frame results shared by the objects tracked on the frame.
    """

    num_tokens: int
    banks: dict[int, SparseMemoryBank] = field(default_factory=dict)
    object_texts: dict[int, str] = field(default_factory=dict)
    uncertainty: dict[int, torch.Tensor] = field(default_factory=dict)
    frame_cache: FrameCache = field(default_factory=FrameCache)

    def object_id(self, inference_state: dict, output_dict: dict) -> int:
        """The id of the object whose sam2 per-object output dict this is (sam2's internals
        pass the dict, not the object)."""
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
        return self.bank(inference_state, self.object_id(inference_state, output_dict))


def pruning_session(inference_state: dict, num_tokens: int) -> PruningSession:
    """The session's pruning state (created on first use)."""
    session = inference_state.get(SESSION_KEY)
    if session is None:
        session = inference_state[SESSION_KEY] = PruningSession(num_tokens)
    return session
