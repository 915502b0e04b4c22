"""The pruned predictor against references: the official predictor at retention 1.0, and a dense
masked memory attention for retention < 1. Plus kept counts, the sparse bank and the scorers."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from sam2.build_sam import build_sam2_video_predictor
from sam2.modeling.position_encoding import compute_axial_cis

from sam2prune import PruningConfig
from sam2prune.cli import embedded_clip, main
from sam2prune.predictor import PrunedSAM2VideoPredictor
from sam2prune.predictor.attention import gather_tokens, sparse_memory_attention
from sam2prune.scorers import ScoringContext, make_scorer, select_tokens
from sam2prune.scorers.baselines import frame_seed, ordered_dither

from conftest import SMALL_SIZE, TEST_DEVICE, build_random

NUM_FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames of the embedded clip, named as sam2's own loader requires (<int>.jpg)."""
    folder = tmp_path_factory.mktemp("clip")
    for path in sorted(embedded_clip().glob("*.jpg"))[:NUM_FRAMES]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def weights():
    return build_random(SMALL_SIZE, seed=5).state_dict()


def official(weights):
    predictor = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        None,
        device=TEST_DEVICE,
        hydra_overrides_extra=[f"++model.image_size={SMALL_SIZE}"],
    )
    predictor.load_state_dict(weights)
    return predictor


def ours(weights, pruning=None):
    predictor = build_random(SMALL_SIZE, pruning=pruning, device=TEST_DEVICE)
    predictor.load_state_dict(weights)
    return predictor


def like_sam2(predictor):
    """On a GPU, kernels (TF32 convolutions among them) are chosen by batch size, so there sam2's
    one step per object is compared with ours one step per object; on the CPU the batched step
    gives sam2's logits as they are (that it equals the per-object loop is
    tests/test_batched_objects.py's)."""
    predictor.batch_objects = TEST_DEVICE == "cpu"
    return predictor


def track_two_objects_with_correction(predictor, clip: Path) -> list[torch.Tensor]:
    """Two objects (click, box) on frame 0, propagate, a correction click on frame 6, propagate
    again from it, then propagate in reverse from frame 9. Returns every logits tensor seen."""
    state = predictor.init_state(str(clip))
    logits = []
    logits.append(predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])[2])
    logits.append(predictor.add_new_points_or_box(state, 0, 2, box=[60, 60, 170, 230])[2])
    logits += [m.clone() for _, _, m in predictor.propagate_in_video(state)]
    logits.append(
        predictor.add_new_points_or_box(state, 6, 1, points=[[240, 90]], labels=[0], clear_old_points=False)[2]
    )
    logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=6)]
    logits += [m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=9, reverse=True)]
    return logits


def track_late_object_and_reverse_from_last(predictor, clip: Path) -> list[torch.Tensor]:
    """Object 2 first prompted on frame 3 (tracked before it without object pointers), then
    reverse propagation from the last, already tracked frame: both crash sam2 1.1.0 on CPU."""
    state = predictor.init_state(str(clip))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    predictor.add_new_points_or_box(state, 3, 2, points=[[112, 128]], labels=[1])
    logits = [m.clone() for _, _, m in predictor.propagate_in_video(state)]
    logits += [
        m.clone() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=NUM_FRAMES - 1, reverse=True)
    ]
    return logits


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=False))


@pytest.fixture(autouse=True)
def _quiet_official_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")
        yield


def test_retention_one_gives_the_official_logits(weights, clip):
    reference = track_two_objects_with_correction(official(weights), clip)
    pruned = track_two_objects_with_correction(like_sam2(ours(weights, PruningConfig(retention=1.0))), clip)
    baseline = track_two_objects_with_correction(like_sam2(ours(weights)), clip)
    assert len(reference) == 2 + 12 + 1 + 6 + 10
    assert max_abs_diff(reference, pruned) <= 1e-6
    assert max_abs_diff(reference, baseline) <= 1e-6
    # the comparison is sharp: another retention changes the logits
    other = track_two_objects_with_correction(ours(weights, PruningConfig(retention=0.5)), clip)
    assert max_abs_diff(reference, other) > 1e-4


def test_reverse_from_a_tracked_frame_works_where_sam2_crashes(weights, clip):
    with pytest.raises(RuntimeError, match="same dtype"):
        track_late_object_and_reverse_from_last(official(weights), clip)
    baseline = track_late_object_and_reverse_from_last(ours(weights), clip)
    pruned_full = track_late_object_and_reverse_from_last(ours(weights, PruningConfig(retention=1.0)), clip)
    assert max_abs_diff(baseline, pruned_full) <= 1e-6
    pruned = track_late_object_and_reverse_from_last(ours(weights, PruningConfig(retention=0.3)), clip)
    assert len(pruned) == len(baseline) == NUM_FRAMES * 2
    assert all(torch.isfinite(m).all() for m in pruned)


def test_kept_tokens_attend_exactly_as_dense_attention_with_dropped_tokens_masked(weights, monkeypatch):
    """Sparse memory attention = the official dense module (official RoPE on the full grid) in
    which every dropped token is masked out of every key set."""
    predictor = ours(weights)
    module = predictor.memory_attention
    grid = (SMALL_SIZE // 16, SMALL_SIZE // 16)
    num_tokens = grid[0] * grid[1]
    generator = torch.Generator().manual_seed(0)
    channels, mem_channels, num_frames, num_pointers = 256, 64, 3, 4
    curr = torch.randn(num_tokens, 1, channels, generator=generator)
    curr_pos = torch.randn(num_tokens, 1, channels, generator=generator)
    memory_frames = [torch.randn(num_tokens, 1, mem_channels, generator=generator) for _ in range(num_frames)]
    memory_pos_frames = [torch.randn(num_tokens, 1, mem_channels, generator=generator) for _ in range(num_frames)]
    pointers = torch.randn(num_pointers, 1, mem_channels, generator=generator)
    pointer_pos = torch.randn(num_pointers, 1, mem_channels, generator=generator)

    def random_subset(count):
        return torch.randperm(num_tokens, generator=generator)[:count].sort().values[None]

    query_keep = random_subset(77)
    frame_keeps = [random_subset(count) for count in (256, 90, 31)]  # a dense frame and two sparse

    def sparse(query_cells: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return sparse_memory_attention(
                module,
                gather_tokens(curr, query_keep),
                gather_tokens(curr_pos, query_keep),
                torch.cat([gather_tokens(m, k) for m, k in zip(memory_frames, frame_keeps, strict=False)] + [pointers]),
                torch.cat(
                    [gather_tokens(p, k) for p, k in zip(memory_pos_frames, frame_keeps, strict=False)] + [pointer_pos]
                ),
                query_cells=query_cells,
                memory_cells=torch.cat(frame_keeps, dim=1),
                grid=grid,
                num_obj_ptr_tokens=num_pointers,
            )

    query_allowed = torch.zeros(num_tokens, dtype=torch.bool)
    query_allowed[query_keep[0]] = True
    memory_allowed = torch.ones(num_frames * num_tokens + num_pointers, dtype=torch.bool)
    for frame, keep in enumerate(frame_keeps):
        allowed = torch.zeros(num_tokens, dtype=torch.bool)
        allowed[keep[0]] = True
        memory_allowed[frame * num_tokens : (frame + 1) * num_tokens] = allowed
    dense_sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = {"self": 0, "cross": 0}

    def masked_sdpa(q, k, v, dropout_p=0.0, **kwargs):
        self_attention = k.shape[-2] == num_tokens
        calls["self" if self_attention else "cross"] += 1
        allowed = query_allowed if self_attention else memory_allowed
        return dense_sdpa(q, k, v, attn_mask=allowed[None, None, None, :], dropout_p=dropout_p)

    with monkeypatch.context() as patch, torch.inference_mode():
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", masked_sdpa)
        dense = module(
            curr=curr,
            memory=torch.cat([*memory_frames, pointers]),
            curr_pos=curr_pos,
            memory_pos=torch.cat([*memory_pos_frames, pointer_pos]),
            num_obj_ptr_tokens=num_pointers,
        )
    assert calls == {"self": 4, "cross": 4}
    kept = sparse(query_keep)
    torch.testing.assert_close(kept, gather_tokens(dense, query_keep), atol=2e-5, rtol=1e-5)
    # positions matter: shifting every query by one cell breaks the equality
    assert (sparse((query_keep + 1) % num_tokens) - kept).abs().max() > 1e-4


def test_rope_table_is_the_official_grid():
    predictor = build_random(SMALL_SIZE)
    attention = predictor.memory_attention.layers[0].cross_attn_image
    table = attention.grid_freqs(16, 16, torch.device("cpu"))
    assert torch.equal(table, compute_axial_cis(dim=256, end_x=16, end_y=16, theta=10000.0))


@pytest.mark.parametrize("prune_conditioning_frames", [False, True])
def test_bank_holds_exactly_the_kept_tokens(weights, clip, prune_conditioning_frames):
    config = PruningConfig(retention=0.3, prune_conditioning_frames=prune_conditioning_frames)
    predictor = ours(weights, config)
    assert isinstance(predictor, PrunedSAM2VideoPredictor)
    state = predictor.init_state(str(clip), bounded_memory=False)  # every frame's memory, inspected below
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    predictor.add_new_mask(
        state, 0, 2, torch.zeros(270, 480, dtype=torch.bool).index_fill_(0, torch.arange(100, 200), True)
    )
    for _ in predictor.propagate_in_video(state):
        pass
    num_tokens = (SMALL_SIZE // 16) ** 2
    kept = math.ceil(0.3 * num_tokens)
    session = predictor.session(state)
    for obj_id, obj_output in zip(state["obj_ids"], state["output_dict_per_obj"].values(), strict=False):
        bank = session.bank(state, obj_id)
        for frame_idx, out in obj_output["non_cond_frame_outputs"].items():
            keep_idx = bank.keep_idx_for(out)
            assert keep_idx.dtype == torch.int16 and keep_idx.shape == (1, kept), frame_idx
            assert torch.all(keep_idx[0, 1:] > keep_idx[0, :-1])  # ascending grid order, unique
            assert out["maskmem_features"].shape == (1, 64, kept)
            assert out["maskmem_features"].dtype == torch.bfloat16
        conditioning = obj_output["cond_frame_outputs"][0]
        if prune_conditioning_frames:
            assert conditioning["maskmem_features"].shape == (1, 64, kept)
        else:
            assert bank.keep_idx_for(conditioning) is None
            assert conditioning["maskmem_features"].shape == (1, 64, SMALL_SIZE // 16, SMALL_SIZE // 16)
    stats = predictor.pruning_stats(state)
    assert stats["tokens_per_frame"] == num_tokens
    assert stats["frames"][5][1]["kept_tokens"] == kept
    dense_bytes = 64 * num_tokens * 2 + 256 * 4
    assert stats["frames"][5][1]["memory_bank_bytes"] == 64 * kept * 2 + kept * 2 + 256 * 4 < 0.35 * dense_bytes
    expected_conditioning = kept if prune_conditioning_frames else num_tokens
    assert stats["frames"][0][2]["kept_tokens"] == expected_conditioning
    assert stats["totals"]["kept_tokens"] == 2 * (11 * kept + expected_conditioning)


def test_baseline_reports_dense_statistics(weights, clip):
    predictor = ours(weights)
    state = predictor.init_state(str(clip))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    for _ in predictor.propagate_in_video(state, max_frame_num_to_track=3):
        pass
    stats = predictor.pruning_stats(state)
    assert stats["totals"]["frames"] == 4 and stats["totals"]["kept_fraction"] == 1.0
    assert stats["frames"][2][1]["memory_bank_bytes"] == 64 * 256 * 2 + 256 * 4


@pytest.mark.parametrize(
    "retention, num_tokens, expected",
    [(0.3, 4096, 1229), (0.3, 1000, 300), (0.5, 1024, 512), (1e-9, 4096, 1), (1.0, 77, 77)],
)
def test_kept_count_is_ceil_of_retention_times_tokens(retention, num_tokens, expected):
    assert PruningConfig(retention=retention).kept_count(num_tokens) == expected


@pytest.mark.parametrize("retention", [0, -0.1, 1.5, float("nan"), float("inf"), "0.3", True, None])
def test_bad_retention_values_are_rejected(retention):
    with pytest.raises(ValueError, match="retention"):
        PruningConfig(retention=retention)


def test_bad_pruning_options_on_the_cli(tmp_path, capsys):
    assert main(["segment", "--out", str(tmp_path / "o"), "--retention", "0"]) == 2
    assert "error: --retention must be in (0, 1]" in capsys.readouterr().err  # the option, not the field
    assert main(["bench", "--retention", "0.3", "1.7"]) == 2
    assert "got 1.7" in capsys.readouterr().err
    assert main(["segment", "--out", str(tmp_path / "o"), "--uncertainty-blocks=-1"]) == 2
    assert "error: --uncertainty-blocks must be block indices >= 0" in capsys.readouterr().err
    assert (
        main(
            ["eval", "--dataset", "davis", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--refine-below", "2"]
        )
        == 2
    )
    assert "error: --refine-below must be a J&F in [0, 1], got 2.0" in capsys.readouterr().err


def test_other_config_errors():
    with pytest.raises(ValueError, match="unknown scorer"):
        PruningConfig(scorer="text")
    with pytest.raises(ValueError, match="unknown fill"):
        PruningConfig(fill="zeros")
    with pytest.raises(ValueError, match="not all 0"):  # every token would score 0: an arbitrary choice
        PruningConfig(signal_weights=(0.0, 0.0, 0.0, 0.0))
    with pytest.raises(TypeError, match="PruningConfig"):
        build_random(pruning=PruningConfig()).set_pruning({"retention": 0.3})


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), float("-inf")])
def test_signal_weights_must_be_finite(weight):
    # nan < 0 is False: a NaN weight passed and made every score NaN, an infinite one inverted the ranking
    with pytest.raises(ValueError, match=r"signal_weights must be 4 finite weights >= 0, not all 0"):
        PruningConfig(signal_weights=(weight, 0.5, 0.25, 0.1))


def test_the_seed_must_fit_every_frame_s_generator_seed():
    # seed * 1_000_003 + frame index (frame_seed) overflowed Generator.manual_seed mid-run above ~1.8e13
    for seed in (2**43, -(2**43) - 1, 2 * 10**13, True, 1.5):
        with pytest.raises(ValueError, match=r"seed must be an integer from -8796093022208 to 8796093022207"):
            PruningConfig(scorer="random", seed=seed)
    tokens = torch.zeros(1, 4, 2)
    for seed in (-(2**43), 2**43 - 1):  # the extremes seed every frame's generator, on the CPU and on a device
        scorer = make_scorer(PruningConfig(scorer="random", seed=seed))
        for frame_idx in (0, 10**9):
            assert scorer(tokens, ScoringContext(frame_idx=frame_idx, grid=(2, 2))).shape == (1, 4)
            torch.Generator(device=TEST_DEVICE).manual_seed(frame_seed(seed, frame_idx))


def test_non_finite_signal_weights_and_out_of_range_seeds_on_the_cli(tmp_path, capsys):
    segment = ["segment", "--out", str(tmp_path / "o")]
    for weights in ("nan,0.5,0.25,0.1", "1,inf,0.25,0.1"):
        assert main([*segment, "--signal-weights", weights]) == 2
        assert "error: --signal-weights must be 4 finite weights >= 0" in capsys.readouterr().err
    seed_error = "error: --seed must be an integer from -8796093022208 to 8796093022207"
    assert main([*segment, "--scorer", "random", "--seed", "20000000000000"]) == 2
    assert seed_error in capsys.readouterr().err
    assert (
        main(["train-router", "--root", str(tmp_path), "--out", str(tmp_path / "r.pt"), "--seed=-9000000000000"]) == 2
    )
    assert seed_error in capsys.readouterr().err


def _context(frame_idx=0, prior=None):
    return ScoringContext(frame_idx=frame_idx, grid=(16, 16), prior_mask=prior)


@pytest.mark.parametrize("scorer_name", ["prior", "uniform", "random"])
def test_scorers_shape_and_determinism(scorer_name):
    tokens = torch.randn(2, 256, 32, generator=torch.Generator().manual_seed(1))
    prior = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    scorer = make_scorer(PruningConfig(scorer=scorer_name))
    scores = scorer(tokens, _context(3, prior))
    assert scores.shape == (2, 256) and torch.isfinite(scores).all()
    assert torch.equal(scores, make_scorer(PruningConfig(scorer=scorer_name))(tokens, _context(3, prior)))
    keep = select_tokens(scores, 77)
    assert keep.shape == (2, 77) and torch.all(keep[:, 1:] > keep[:, :-1])


def test_random_scorer_depends_on_seed_and_frame_only():
    tokens = torch.zeros(1, 256, 8)
    scorer = make_scorer(PruningConfig(scorer="random", seed=1))
    assert not torch.equal(scorer(tokens, _context(0)), scorer(tokens, _context(1)))
    assert not torch.equal(
        scorer(tokens, _context(0)), make_scorer(PruningConfig(scorer="random", seed=2))(tokens, _context(0))
    )
    assert torch.equal(scorer(tokens, _context(4)), scorer(torch.ones(1, 256, 8), _context(4)))


def test_uniform_scorer_is_a_regular_grid():
    keep = select_tokens(make_scorer(PruningConfig(scorer="uniform"))(torch.zeros(1, 256, 8), _context()), 64)
    rows, cols = keep[0] // 16, keep[0] % 16
    assert set(rows.tolist()) == set(range(0, 16, 2)) and set(cols.tolist()) == set(range(0, 16, 2))
    assert ordered_dither(5, 7).shape == (35,) and len(set(ordered_dither(8, 8).tolist())) == 64


def test_prior_scorer_keeps_the_object_and_its_ring_first():
    prior = torch.full((1, 1, 64, 64), -5.0)
    prior[..., 24:40, 24:40] = 5.0  # token cells 6..9 (4 px per cell at this resolution)
    tokens = torch.randn(1, 256, 8, generator=torch.Generator().manual_seed(0))
    scores = make_scorer(PruningConfig(scorer="prior", prior_dilation=1))(tokens, _context(prior=prior)).view(16, 16)
    inside, ring = scores[6:10, 6:10], scores[5:11, 5:11].clone()
    ring[1:5, 1:5] = float("nan")
    outside = scores.clone()
    outside[5:11, 5:11] = float("nan")
    assert inside.min() > ring.nan_to_num(1e9).min() >= 0.99
    assert ring.nan_to_num(-1).max() < inside.min() and outside.nan_to_num(-1).max() < 0.01
    with pytest.raises(ValueError, match="needs a prior"):
        make_scorer(PruningConfig(scorer="prior"))(tokens, _context())


def test_prior_scorer_without_a_neighbouring_output_runs_the_frame_dense(weights, clip):
    predictor = ours(weights, PruningConfig(retention=0.3))
    state = predictor.init_state(str(clip))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    for _ in predictor.propagate_in_video(state, max_frame_num_to_track=2):
        pass
    # start tracking at frame 5: frame 4 has no output, so frame 5 cannot be scored on a prior
    for _ in predictor.propagate_in_video(state, start_frame_idx=5, max_frame_num_to_track=1):
        pass
    outputs = state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    bank = predictor.session(state).bank(state, 1)
    assert bank.keep_idx_for(outputs[5]) is None and outputs[5]["maskmem_features"].dim() == 4
    assert bank.keep_idx_for(outputs[6]).shape[-1] == math.ceil(0.3 * 256)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (SAM 2 runs under bf16 autocast there)")
@pytest.mark.parametrize("scorer, router", [("prior", "default"), ("router", "default"), ("router", "paper")])
def test_pruned_tracking_under_bf16_autocast_on_cuda(weights, clip, scorer, router):
    """SAM 2's own GPU examples run the video predictor under bfloat16 autocast: the pruned
    predictor must track there too, keeping exactly k tokens per tracked frame."""
    config = PruningConfig(retention=0.3, scorer=scorer, router=router)
    predictor = build_random(SMALL_SIZE, pruning=config, device="cuda")
    predictor.load_state_dict(weights)
    kept = math.ceil(0.3 * (SMALL_SIZE // 16) ** 2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        state = predictor.init_state(str(clip), bounded_memory=False)  # every frame's output inspected
        predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
        logits = [m.float() for _, _, m in predictor.propagate_in_video(state)]
        outputs = state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
        bank = predictor.session(state).bank(state, 1)
        assert sorted(outputs) == list(range(1, NUM_FRAMES))
        assert all(bank.keep_idx_for(out).shape == (1, kept) for out in outputs.values())
        # the reverse pass starts on the last frame, which has no later neighbour: it runs dense
        logits += [
            m.float() for _, _, m in predictor.propagate_in_video(state, start_frame_idx=NUM_FRAMES - 1, reverse=True)
        ]
    assert len(logits) == 2 * NUM_FRAMES and all(torch.isfinite(m).all() for m in logits)
