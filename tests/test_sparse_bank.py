"""The pruned predictor's own sparse memory, end to end: at a tracked frame of a real clip, the
kept queries' memory-attention outputs equal sam2's official dense computation over the same
bank (densified) in which every dropped token is masked out of every key set; and retention 1.0
is the identity (nothing scored, gathered or stored)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from sam2.modeling.sam2_base import SAM2Base

from sam2prune import PruningConfig
from sam2prune.cli import embedded_clip
from sam2prune.predictor.attention import dropped_token_fill, gather_tokens
from sam2prune.sam2_copies import select_memory_frames

from conftest import SMALL_SIZE, build_random

NUM_FRAMES = 11


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    for path in sorted(embedded_clip().glob("*.jpg"))[:NUM_FRAMES]:
        shutil.copy(path, folder / path.name)
    return folder


def _densified(output_dict: dict, bank) -> dict:
    """A copy of an object's output dict with every sparse memory scattered back onto the full
    grid (zeros at dropped cells), and the cells that were kept, per stored output."""
    dense = {key: {} for key in output_dict}
    kept_cells = {}
    for key, outputs in output_dict.items():
        for frame_idx, out in outputs.items():
            copy = dict(out)
            keep_idx = bank.keep_idx_for(out)
            features = out["maskmem_features"]
            if keep_idx is not None:
                batch, channels, _ = features.shape
                full = features.new_zeros(batch, channels, bank.num_tokens)
                full.scatter_(2, keep_idx.long()[:, None, :].expand(-1, channels, -1), features)
                side = int(bank.num_tokens**0.5)
                copy["maskmem_features"] = full.view(batch, channels, side, side)
                kept_cells[id(copy)] = keep_idx[0].long()
            dense[key][frame_idx] = copy
    return dense, kept_cells


def test_sparse_bank_at_a_tracked_frame_equals_official_dense_attention_with_dropped_tokens_masked(clip, monkeypatch):
    predictor = build_random(SMALL_SIZE, seed=7, pruning=PruningConfig(retention=0.4, scorer="prior"))
    num_tokens = predictor.num_tokens
    state = predictor.init_state(str(clip), bounded_memory=False)  # the memories read are rebuilt below
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    target = NUM_FRAMES - 1  # the bank is full: 6 tracked sparse frames + the dense prompt frame
    captured = {}
    sparse = predictor._sparse_memory_conditioned_features

    def capture(frame, frame_idx, curr, curr_pos, grid, num_frames, track_in_reverse):
        output = sparse(frame, frame_idx, curr, curr_pos, grid, num_frames, track_in_reverse)
        if frame_idx == target:
            captured.update(
                keep_idx=frame.keep_idx,
                curr=curr.clone(),
                curr_pos=curr_pos.clone(),
                grid=grid,
                output=output.clone(),
                num_frames=num_frames,
            )
        return output

    monkeypatch.setattr(predictor, "_sparse_memory_conditioned_features", capture)
    with torch.inference_mode():
        for _ in predictor.propagate_in_video(state, max_frame_num_to_track=target):
            pass
    assert captured, "the target frame was not tracked sparsely"
    keep_idx = captured["keep_idx"]
    assert keep_idx.shape == (1, predictor.pruning.kept_count(num_tokens))

    # rebuild what the sparse step read: the bank, as it was before the target frame was stored
    output_dict = state["output_dict_per_obj"][0]
    bank = predictor.session(state).bank(state, 1)
    before = {key: {t: out for t, out in outputs.items() if t != target} for key, outputs in output_dict.items()}
    dense_dict, kept_cells = _densified(before, bank)
    memory_frames, _, _ = select_memory_frames(predictor, target, dense_dict, track_in_reverse=False)
    assert [t_pos for t_pos, _ in memory_frames] == [0, 1, 2, 3, 4, 5, 6]
    assert sum(id(out) in kept_cells for _, out in memory_frames) == 6  # every tracked memory sparse

    query_allowed = torch.zeros(num_tokens, dtype=torch.bool)
    query_allowed[keep_idx[0].long()] = True
    spatial_allowed = []
    for _, out in memory_frames:
        allowed = (
            torch.ones(num_tokens, dtype=torch.bool)
            if id(out) not in kept_cells
            else torch.zeros(num_tokens, dtype=torch.bool)
        )
        if id(out) in kept_cells:
            allowed[kept_cells[id(out)]] = True
        spatial_allowed.append(allowed)
    spatial_allowed = torch.cat(spatial_allowed)
    official_sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = {"self": 0, "cross": 0}

    def masked_sdpa(q, k, v, dropout_p=0.0, **kwargs):
        if k.shape[-2] == num_tokens:  # self-attention among the frame's tokens
            calls["self"] += 1
            allowed = query_allowed
        else:  # cross-attention: spatial memories, then the object pointers (never pruned)
            calls["cross"] += 1
            pointers = k.shape[-2] - len(spatial_allowed)
            assert pointers > 0
            allowed = torch.cat([spatial_allowed, torch.ones(pointers, dtype=torch.bool)])
        return official_sdpa(q, k, v, attn_mask=allowed[None, None, None, :], dropout_p=dropout_p)

    with monkeypatch.context() as patch, torch.inference_mode():
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", masked_sdpa)
        reference = SAM2Base._prepare_memory_conditioned_features(
            predictor,
            target,
            False,
            [captured["curr"]],
            [captured["curr_pos"]],
            [captured["grid"]],
            dense_dict,
            captured["num_frames"],
            False,
        )
    assert calls == {"self": 4, "cross": 4}
    ours = captured["output"].flatten(2).permute(2, 0, 1)  # [N, 1, C]
    reference = reference.flatten(2).permute(2, 0, 1)
    torch.testing.assert_close(gather_tokens(ours, keep_idx), gather_tokens(reference, keep_idx), atol=2e-5, rtol=1e-5)
    # dropped cells hold what memory attention outputs for a token that received nothing
    dropped = (~query_allowed).nonzero()[:, 0][None]
    fill = dropped_token_fill(predictor.memory_attention, captured["curr"], captured["curr_pos"])
    torch.testing.assert_close(gather_tokens(ours, dropped), gather_tokens(fill, dropped), atol=1e-6, rtol=1e-6)
    # the comparison is sharp: without the masks, the kept tokens attend elsewhere
    with torch.inference_mode():
        unmasked = (
            SAM2Base._prepare_memory_conditioned_features(
                predictor,
                target,
                False,
                [captured["curr"]],
                [captured["curr_pos"]],
                [captured["grid"]],
                dense_dict,
                captured["num_frames"],
                False,
            )
            .flatten(2)
            .permute(2, 0, 1)
        )
    assert (gather_tokens(unmasked, keep_idx) - gather_tokens(ours, keep_idx)).abs().max() > 1e-3


def test_retention_one_scores_and_stores_nothing(clip, monkeypatch):
    predictor = build_random(SMALL_SIZE, seed=7, pruning=PruningConfig(retention=1.0))
    assert predictor.keeps_everything and predictor.uncertainty_probe is None

    def refuse(*args, **kwargs):
        raise AssertionError("retention 1.0 must not score tokens")

    monkeypatch.setattr(predictor.scorer, "fuse", refuse)
    monkeypatch.setattr(predictor, "_sparse_memory_conditioned_features", refuse)
    state = predictor.init_state(str(clip))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    with torch.inference_mode():
        for _ in predictor.propagate_in_video(state, max_frame_num_to_track=4):
            pass
    bank = predictor.session(state).bank(state, 1)
    assert not bank.has_sparse_frames()
    stats = predictor.pruning_stats(state)
    baseline = build_random(SMALL_SIZE, seed=7)
    base_state = baseline.init_state(str(clip))
    baseline.add_new_points_or_box(base_state, 0, 1, points=[[200, 112]], labels=[1])
    with torch.inference_mode():
        for _ in baseline.propagate_in_video(base_state, max_frame_num_to_track=4):
            pass
    assert stats["totals"]["memory_bank_bytes"] == baseline.pruning_stats(base_state)["totals"]["memory_bank_bytes"]
    assert stats["totals"]["held_bytes"] == baseline.pruning_stats(base_state)["totals"]["held_bytes"]


def test_held_bytes_count_the_masks_that_sam2_keeps_per_frame(clip):
    predictor = build_random(SMALL_SIZE, seed=7, pruning=PruningConfig(retention=0.3, scorer="prior"))
    state = predictor.init_state(str(clip), bounded_memory=False)  # as sam2 keeps them
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    with torch.inference_mode():
        for _ in predictor.propagate_in_video(state, max_frame_num_to_track=3):
            pass
    entry = predictor.pruning_stats(state)["frames"][2][1]
    kept = predictor.pruning.kept_count(predictor.num_tokens)
    mask_side = SMALL_SIZE // 4  # sam2's low-resolution masks: a quarter of the input size
    assert entry["bytes"] == {
        "features": 64 * kept * 2,
        "indices": kept * 2,
        "pointers": 256 * 4,
        "masks": mask_side**2 * 4,
    }
    assert entry["held_bytes"] == entry["memory_bank_bytes"] + mask_side**2 * 4
