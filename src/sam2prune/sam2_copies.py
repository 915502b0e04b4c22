"""Everything of sam2 1.1.0 that sam2prune had to copy rather than extend, in one place, and the
fingerprints of every sam2 function it copies, overrides or relies on the inner workings of.

sam2prune extends the official package (subclasses, config overrides, calls of sam2's own
methods). Where sam2 has no hook for what pruning needs, the smallest piece of its code is
reproduced here, with the change marked. ``tests/test_sam2_compat.py`` fails when the installed
sam2's source of any fingerprinted function changes, so that a new sam2 release is reviewed
against these copies instead of silently diverging from them; ``check_sam2_version`` refuses a
sam2 version the project was not tested with.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F

from sam2prune.errors import InputError

if TYPE_CHECKING:
    from sam2.modeling.sam.transformer import RoPEAttention
    from sam2.modeling.sam2_base import SAM2Base
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from sam2prune.predictor.attention import TokenPositions

TESTED_SAM2_VERSIONS = ("1.1.0",)
# set to 1 to run with another sam2 version anyway (at your own risk: see check_sam2_version)
ALLOW_UNTESTED_SAM2 = "SAM2PRUNE_ALLOW_UNTESTED_SAM2"

# sha256 of inspect.getsource(...) in sam2 1.1.0, by "module:qualified name", and why it matters.
FINGERPRINTS: dict[str, tuple[str, str]] = {
    # copied below
    "sam2.modeling.sam.transformer:RoPEAttention.forward": (
        "f2042b996e283daae55ad2fb1a8c4163d1d2e1a10746a89449f4b3cea9de95ec",
        "copied: positioned_rope_attention",
    ),
    "sam2.modeling.position_encoding:apply_rotary_enc": (
        "8047941cccdcaaf97396ed40958c2c001cbabfd399a96d12de250c001c8be3c4",
        "copied: _rotate computes the same rotation with per-token frequencies",
    ),
    "sam2.modeling.sam2_base:SAM2Base._prepare_memory_conditioned_features": (
        "bf6d7c3fe3e70ae71f75bd86331ae31381d8381a4ff6172bf3a2480b82d139f8",
        "copied: memory_frame_indices, pointer_frame_indices (the windows bounded memory keeps), "
        "select_memory_frames, object_pointer_tokens; overridden by PrunedSAM2VideoPredictor",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor.propagate_in_video": (
        "746939be28ba4485e8b82a0901fade25729459a75e6c76fc8f9ab1964c6c2c77",
        "copied: propagate_objects; overridden by SAM2Predictor (objects tracked from their first prompt)",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor._clear_non_cond_mem_around_input": (
        "579b5fe2e7a26482d8a2e2b0e3e8ff916267663d7d2542728408bc9335b0ba73",
        "its per-object variant, which 1.1.0 calls but lacks, is SAM2Predictor._clear_obj_non_cond_mem_around_input",
    ),
    # overridden, calling sam2's own method
    "sam2.sam2_video_predictor:SAM2VideoPredictor.init_state": (
        "ce8719fa5ecacd3f83e8fe0df149df5ce1a8117051006c33c568c7225cbad0eb",
        "extended through the load_video_frames it calls (baseline.init_state_from, for sam2's own predictors too)",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor.reset_state": (
        "606880f5c993e6c78eea715012534528ea8f19655c6d52849a2e26100b297347",
        "overridden by SAM2Predictor (a new session, keeping bounded_memory)",
    ),
    "sam2.modeling.sam2_base:SAM2Base.forward_image": (
        "3d7b7212efc120f70d7b2bcf81ea8a44dddd484c69614dcfbcc186cb28ed90bd",
        "overridden by PrunedSAM2VideoPredictor (run on a fixed input, as a CUDA graph, with the static step); "
        "its outputs are a dict of tensors and lists of tensors, the position encodings fixed by the shape",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor._get_image_feature": (
        "05c8b4970aa3075b5b24c88002850fb55c141826e65c5b8b1c5790fc2c8cc236",
        "overridden by PrunedSAM2VideoPredictor (uncertainty of a frame it encodes); reads only "
        "images[frame_idx], so a FrameSource serves it, and caches the last frame only",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor._run_single_frame_inference": (
        "b26337ac92abb013345e6ce0351a9047c87f0d230f23f1605c1d5b6a9a4f95af",
        "overridden by SAM2Predictor (bounded memory: what the frame reads is recomputed first) and, through "
        "_infer_frame, by PrunedSAM2VideoPredictor (tokens chosen before, stored after)",
    ),
    "sam2.modeling.sam2_base:SAM2Base.track_step": (
        "4fe89a489431e38bd1b934effa66cf7fd89cbafa0d1862175dafcc784e99ec31",
        "overridden by PrunedSAM2VideoPredictor: a steady frame runs it on the static step's buffers "
        "(static_step.py), which hands back the keys _run_single_frame_inference reads (OUTPUT_KEYS)",
    ),
    "sam2.modeling.sam2_base:SAM2Base._track_step": (
        "0c6ec41c85822af41e491a9442774a33f11df13331ddf9c1e9dce7c92c7d2362",
        "the static step relies on it reading the output dict and frame index only through "
        "_prepare_memory_conditioned_features, and on no host-device sync (CUDA graph capture)",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor.add_new_points_or_box": (
        "17737f16eca2c207afd19edfbf852b4d2342d1baa2133338e67c86db663d9a7b",
        "overridden by SAM2Predictor: it reads the frame's previous mask, which bounded memory puts back first",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor._consolidate_temp_output_across_obj": (
        "aeede992361d0210fc84f72833dde2a95f239e90a30edd0c8050fb6ba9a44d8a",
        "overridden by SAM2Predictor: it reads every object's mask on the frame, which bounded memory puts back first",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor.add_new_mask": (
        "2214dcbdf19bd4ece56993ef91d67827d62ee6fa617b39c9589c6307f10f8c5c",
        "bounded memory relies on it reading other frames only through _run_single_frame_inference and "
        "_consolidate_temp_output_across_obj",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor.clear_all_prompts_in_frame": (
        "c3e0cec26562c0ff0e10879db0997fa67c04209299e83113216139a58bb7cb0b",
        "bounded memory relies on it reading outputs only through _consolidate_temp_output_across_obj",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor.remove_object": (
        "948cbfd375074b9a29d6c4c2679530225f78fc092e1fd7461aa71678ac845082",
        "overridden by SAM2Predictor (the object's bank goes with it); bounded memory relies on it reading "
        "outputs only through _consolidate_temp_output_across_obj and keeping each object's output dict (the "
        "banks wrap them)",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictor.propagate_in_video_preflight": (
        "0dc6ee175683ddaa66706ea399c4c0b16b78d2e90e43b4352a23da046b757c6f",
        "overridden by SAM2Predictor (objects with new prompts start new tracking runs) and "
        "PrunedSAM2VideoPredictor (prompted frames' memories pruned)",
    ),
    # relied on: how they call what sam2prune replaces
    "sam2.build_sam:build_sam2_video_predictor": (
        "675761c2da68eebf4f90318ed201bd652e34d0f3cd299d0397e4e7f75b9364dc",
        "models._instantiate builds through it, giving it configs via its compose call",
    ),
    "sam2.sam2_video_predictor:SAM2VideoPredictorVOS._compile_all_components": (
        "4bbcc152b8384e93db4c91745e965cdd512063f9ef2aa7d6372507ce4f84e867",
        "bench builds sam2's vos_optimized predictor with these torch.compile calls' mode lowered (models.torch_compile_mode)",
    ),
    "sam2.utils.misc:load_video_frames": (
        "6e211f15b666cfc4e4869fc9eb1202f2e5d77a8dcb09e876bd5126e327f0518c",
        "data.frames reads its normalisation; SAM2Predictor.init_state replaces it while it runs",
    ),
    "sam2.modeling.memory_attention:MemoryAttention.forward": (
        "29d8ecabcabc61477c6b686102732c3d75ac81a0ee8993d50fc1e55cc0e7013f",
        "subclassed (dtype cast); runs unchanged with token positions",
    ),
    "sam2.modeling.memory_attention:MemoryAttentionLayer.forward": (
        "316640acbff0297928a96adf580b42387fa07b9599b26a96424c41bc75674c54",
        "runs unchanged with token positions: self-attention on the queries, cross-attention to the memory",
    ),
}


def installed_sam2_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sam2")
    except PackageNotFoundError:
        return None


def check_sam2_version() -> None:
    """Raises InputError unless the installed sam2 is a version sam2prune was tested with (or
    ``SAM2PRUNE_ALLOW_UNTESTED_SAM2=1`` is set)."""
    installed = installed_sam2_version()
    if installed in TESTED_SAM2_VERSIONS or os.environ.get(ALLOW_UNTESTED_SAM2) == "1":
        return
    raise InputError(
        f"sam2 {installed or '(not installed)'} is installed, but sam2prune extends sam2 "
        f"{', '.join(TESTED_SAM2_VERSIONS)} and copies parts of its code (sam2prune/sam2_copies.py): install it "
        f"with `SAM2_BUILD_CUDA=0 pip install sam2=={TESTED_SAM2_VERSIONS[-1]}`, or set {ALLOW_UNTESTED_SAM2}=1 "
        "to try this version anyway"
    )


def resolve(qualified_name: str) -> Any:
    """The sam2 object of ``"module:Class.attribute"`` (a module, class or function: sam2 is untyped)."""
    module_name, _, path = qualified_name.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in path.split("."):
        target = getattr(target, part)
    return target


def source_fingerprint(qualified_name: str) -> str:
    """sha256 of the installed sam2's source of ``qualified_name``."""
    return hashlib.sha256(inspect.getsource(resolve(qualified_name)).encode()).hexdigest()


# --- RoPEAttention.forward with explicit token positions ------------------------------------
# sam2: sam2/modeling/sam/transformer.py, RoPEAttention.forward. Change: instead of deriving a
# square grid from the query count and tiling the query frequencies over the keys, every query
# and key rotates with the frequencies of its own grid cell (TokenPositions).


def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary encoding of ``x`` ``[B, heads, n, d]`` with per-token ``freqs`` ``[B, n, d/2]``,
    as sam2's ``apply_rotary_enc`` computes it (in float32, cast back)."""
    x_complex = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(x_complex * freqs[:, None]).flatten(3).type_as(x)


def positioned_rope_attention(
    attention: RoPEAttention,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    positions: TokenPositions,
    num_k_exclude_rope: int = 0,
) -> torch.Tensor:
    """``RoPEAttention.forward`` with per-token rotary positions.

    Args:
        attention: a ``PositionedRoPEAttention`` (official weights).
        q: ``[B, n_q, C]``; k, v: ``[B, n_k, C_kv]``.
        positions: cells of the queries and (for cross-attention) of the spatial memory keys.
        num_k_exclude_rope: trailing keys without rotation (object pointers).

    Returns:
        ``[B, n_q, C]``.
    """
    q = attention._separate_heads(attention.q_proj(q), attention.num_heads)
    k = attention._separate_heads(attention.k_proj(k), attention.num_heads)
    v = attention._separate_heads(attention.v_proj(v), attention.num_heads)
    height, width = positions.grid
    table = attention.grid_freqs(height, width, q.device)
    key_cells = positions.memory_cells if attention.rope_k_repeat else positions.query_cells
    num_k_rope = k.size(-2) - num_k_exclude_rope
    if key_cells.shape[-1] != num_k_rope:
        raise ValueError(f"{key_cells.shape[-1]} key positions for {num_k_rope} rotated keys")
    q = _rotate(q, table[positions.query_cells])
    if num_k_rope > 0:
        k[:, :, :num_k_rope] = _rotate(k[:, :, :num_k_rope], table[key_cells])
    dropout_p = attention.dropout_p if attention.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return attention.out_proj(attention._recombine_heads(out))


# --- which memories a frame attends to ------------------------------------------------------
# sam2: sam2/modeling/sam2_base.py, SAM2Base._prepare_memory_conditioned_features, the selection
# of memory frames and object pointers. Change: none in what is selected; it is returned (the
# stored outputs, their temporal positions, the pointers) instead of being concatenated into
# dense memory tokens, so that each frame's stored tokens can be read with their own positions.


def memory_frame_indices(model: SAM2Base, frame_idx: int, *, track_in_reverse: bool) -> list[tuple[int, int]]:
    """(temporal position, frame index) of each non-conditioning spatial memory a tracked frame
    reads, in sam2 1.1.0's order: the last ``num_maskmem - 1`` frames before it, every
    ``memory_temporal_stride_for_eval``-th beyond the previous one. Indices may lie outside the
    video (sam2 then finds nothing there); none when the model has no memory."""
    stride = 1 if model.training else model.memory_temporal_stride_for_eval
    indices = []
    for t_pos in range(1, model.num_maskmem):
        t_rel = model.num_maskmem - t_pos  # frames before the current one
        if t_rel == 1:
            previous_idx = frame_idx + 1 if track_in_reverse else frame_idx - 1
        elif not track_in_reverse:
            previous_idx = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            previous_idx = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        indices.append((t_pos, previous_idx))
    return indices


def pointer_frame_indices(
    model: SAM2Base, frame_idx: int, *, num_frames: int, track_in_reverse: bool
) -> list[tuple[int, int]]:
    """(temporal distance, frame index) of each previous frame whose object pointer a tracked
    frame reads (besides the conditioning frames'), as sam2 1.1.0 walks them: up to
    ``min(num_frames, max_obj_ptrs_in_encoder) - 1`` frames back, within the video."""
    if not model.use_obj_ptrs_in_encoder:
        return []
    max_pointers = min(num_frames, model.max_obj_ptrs_in_encoder)
    indices = []
    for t_diff in range(1, max_pointers):
        t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        indices.append((t_diff, t))
    return indices


def select_memory_frames(
    model: SAM2Base, frame_idx: int, output_dict: dict, *, track_in_reverse: bool
) -> tuple[list[tuple[int, dict]], dict, dict]:
    """(temporal position, stored output) of each spatial memory a frame attends to, in sam2
    1.1.0's order: the selected conditioning frames (t_pos 0), then the last ``num_maskmem - 1``
    frames before this one (``memory_frame_indices``).

    Returns:
        (the memories, the selected conditioning outputs, the unselected ones).
    """
    from sam2.modeling.sam2_utils import select_closest_cond_frames

    selected_cond, unselected_cond = select_closest_cond_frames(
        frame_idx, output_dict["cond_frame_outputs"], model.max_cond_frames_in_attn
    )
    frames = [(0, out) for out in selected_cond.values()]
    for t_pos, previous_idx in memory_frame_indices(model, frame_idx, track_in_reverse=track_in_reverse):
        out = output_dict["non_cond_frame_outputs"].get(previous_idx)
        if out is None:
            out = unselected_cond.get(previous_idx)
        if out is not None:
            frames.append((t_pos, out))
    return frames, selected_cond, unselected_cond


def conditioning_pointers(
    model: SAM2Base, frame_idx: int, selected_cond: dict, *, track_in_reverse: bool
) -> list[tuple[int, int, dict]]:
    """(frame index, temporal position, output) of the selected conditioning frames whose object
    pointers a tracked frame reads, in sam2 1.1.0's order (only those behind it in evaluation, by
    default)."""
    if not model.training and model.only_obj_ptrs_in_the_past_for_eval:
        pointer_cond = {
            t: out for t, out in selected_cond.items() if (t >= frame_idx if track_in_reverse else t <= frame_idx)
        }
    else:
        pointer_cond = selected_cond
    sign = -1 if track_in_reverse else 1
    return [
        (t, (frame_idx - t) * sign if model.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), out)
        for t, out in pointer_cond.items()
    ]


def object_pointer_tokens(
    model: SAM2Base,
    frame_idx: int,
    output_dict: dict,
    selected_cond: dict,
    unselected_cond: dict,
    *,
    num_frames: int,
    track_in_reverse: bool,
    batch: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Object-pointer memory tokens and their temporal encodings (``[P, B, C_mem]`` each), as
    sam2 1.1.0 builds them; None when there is none. Pointers are never pruned."""
    if not model.use_obj_ptrs_in_encoder:
        return None
    max_pointers = min(num_frames, model.max_obj_ptrs_in_encoder)
    positions_and_pointers = [
        (position, out["obj_ptr"])
        for _, position, out in conditioning_pointers(
            model, frame_idx, selected_cond, track_in_reverse=track_in_reverse
        )
    ]
    for t_diff, t in pointer_frame_indices(model, frame_idx, num_frames=num_frames, track_in_reverse=track_in_reverse):
        out = output_dict["non_cond_frame_outputs"].get(t, unselected_cond.get(t))
        if out is not None:
            positions_and_pointers.append((t_diff, out["obj_ptr"]))
    if not positions_and_pointers:
        return None
    positions, pointer_list = zip(*positions_and_pointers, strict=False)
    return encode_pointer_tokens(
        model,
        torch.stack(pointer_list, dim=0),
        torch.tensor(positions),
        max_pointers=max_pointers,
        batch=batch,
        device=device,
    )


def encode_pointer_tokens(
    model: SAM2Base,
    pointers: torch.Tensor,
    positions: torch.Tensor,
    *,
    max_pointers: int,
    batch: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory tokens of object pointers and their temporal encodings (``[P, B, C_mem]``
    each), as sam2 1.1.0 builds them from the pointers ``[P, B, C]`` and their temporal
    distances ``positions`` (``[P]``, integers), normalised by ``max_pointers - 1``."""
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    channels = model.hidden_dim
    if model.add_tpos_enc_to_obj_ptrs:
        tpos_dim = channels if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim
        encoded = positions.to(device=device, non_blocking=True)
        encoded = get_1d_sine_pe(encoded / (max_pointers - 1), dim=tpos_dim)
        pointer_pos = model.obj_ptr_tpos_proj(encoded).unsqueeze(1).expand(-1, batch, model.mem_dim)
    else:
        pointer_pos = pointers.new_zeros(len(positions), batch, model.mem_dim)
    if model.mem_dim < channels:
        # a pointer of C channels becomes C // mem_dim tokens
        pointers = pointers.reshape(-1, batch, channels // model.mem_dim, model.mem_dim)
        pointers = pointers.permute(0, 2, 1, 3).flatten(0, 1)
        pointer_pos = pointer_pos.repeat_interleave(channels // model.mem_dim, dim=0)
    return pointers, pointer_pos


# --- propagate_in_video ------------------------------------------------------------------------
# sam2: sam2/sam2_video_predictor.py, SAM2VideoPredictor.propagate_in_video. Changes: an object
# takes part in a frame only where ``takes_part(obj_idx, frame_idx)`` says so; elsewhere nothing
# is run or stored for it and its mask logits are empty (NO_OBJ_SCORE). sam2 runs every object on
# every frame from the start frame, e.g. a late object before its first prompt. And once a frame
# is yielded and the caller asks for the next or stops, ``after_frame`` sees every object's output on it
# (where bounded memory forgets what no later frame reads). And the objects to track on a frame go
# to ``predictor._track_objects`` together, which batches them.


def propagate_objects(
    predictor: SAM2VideoPredictor,
    inference_state: dict,
    start_frame_idx: int | None,
    max_frame_num_to_track: int | None,
    reverse: bool,
    *,
    takes_part: Callable[[int, int], bool],
    after_frame: Callable[[int, dict[int, tuple[dict, dict | None]], bool], None] | None = None,
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """sam2 1.1.0's propagation loop with per-object participation (see above).

    ``after_frame(frame_idx, outputs, last)``, once the caller is done with a yielded frame (asks
    for the next, or stops there; ``last``: the pass ends with it): ``outputs`` maps the id of
    each object that took part in the frame to (its per-object output dict, the output it was
    tracked to there or None on its conditioning frames), as they were when it was tracked: by
    then the caller may have removed objects (which renumbers the others) or reset the state.

    Yields:
        ``(frame_idx, obj_ids, video_res_masks)`` for every frame in processing order;
        ``video_res_masks`` ``[num_objects, 1, video_H, video_W]``, every object, in ``obj_ids`` order.
    """
    from sam2.modeling.sam2_base import NO_OBJ_SCORE

    from sam2prune.progress import progress

    predictor.propagate_in_video_preflight(inference_state)
    obj_ids = inference_state["obj_ids"]
    num_frames = inference_state["num_frames"]
    batch_size = predictor._get_obj_num(inference_state)
    if start_frame_idx is None:
        start_frame_idx = min(
            t
            for obj_output_dict in inference_state["output_dict_per_obj"].values()
            for t in obj_output_dict["cond_frame_outputs"]
        )
    if max_frame_num_to_track is None:
        max_frame_num_to_track = num_frames
    if reverse:
        end_frame_idx = max(start_frame_idx - max_frame_num_to_track, 0)
        processing_order = range(start_frame_idx, end_frame_idx - 1, -1) if start_frame_idx > 0 else range(0)
    else:
        end_frame_idx = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
        processing_order = range(start_frame_idx, end_frame_idx + 1)

    low_res = predictor.image_size // 4
    for frame_idx in progress(processing_order, desc="propagate in video", unit="frame"):
        pred_masks_per_obj: list[torch.Tensor | None] = [None] * batch_size
        outputs: dict[int, tuple[dict, dict | None]] = {}  # for after_frame, by object id
        taking_part = [obj_idx for obj_idx in range(batch_size) if takes_part(obj_idx, frame_idx)]  # change 1
        tracked = [
            obj_idx
            for obj_idx in taking_part
            if frame_idx not in inference_state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"]
        ]
        # change 2: the objects to track run through the predictor's _track_objects (batched where
        # their memories allow), instead of one _run_single_frame_inference call each
        results = predictor._track_objects(inference_state, frame_idx, tracked, reverse=reverse) if tracked else {}
        for obj_idx in range(batch_size):
            obj_output_dict = inference_state["output_dict_per_obj"][obj_idx]
            if obj_idx not in taking_part:
                pred_masks_per_obj[obj_idx] = torch.full(
                    (1, 1, low_res, low_res), NO_OBJ_SCORE, dtype=torch.float32, device=inference_state["device"]
                )
                continue
            if obj_idx not in results:
                current_out = obj_output_dict["cond_frame_outputs"][frame_idx]
                outputs[inference_state["obj_idx_to_id"][obj_idx]] = (obj_output_dict, None)
                pred_masks = current_out["pred_masks"].to(inference_state["device"], non_blocking=True)
                if predictor.clear_non_cond_mem_around_input:
                    predictor._clear_obj_non_cond_mem_around_input(inference_state, frame_idx, obj_idx)
            else:
                current_out, pred_masks = results[obj_idx]
                obj_output_dict["non_cond_frame_outputs"][frame_idx] = current_out
                outputs[inference_state["obj_idx_to_id"][obj_idx]] = (obj_output_dict, current_out)
            inference_state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}
            pred_masks_per_obj[obj_idx] = pred_masks
        all_pred_masks = (
            torch.cat(cast(list[torch.Tensor], pred_masks_per_obj), dim=0)  # every object's slot is filled above
            if len(pred_masks_per_obj) > 1
            else pred_masks_per_obj[0]
        )
        _, video_res_masks = predictor._get_orig_video_res_output(inference_state, all_pred_masks)
        stopped = True
        try:
            yield frame_idx, obj_ids, video_res_masks
            stopped = False
        finally:  # change 3; also when the caller stops here (a break closes the generator)
            if after_frame is not None:
                after_frame(frame_idx, outputs, stopped or frame_idx == processing_order[-1])
