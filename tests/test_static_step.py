"""The static-shape tracking step (issue 13: a fast path on CUDA) against its eager twin, sam2's
step over the dict bank: on a clip long enough to wrap its ring buffers (36 frames:
6 spatial slots, 15 pointer slots), two objects batched, a correction click, a pass in reverse,
pruned and dense, the logits are the same bits. On CUDA (``SAM2PRUNE_TEST_DEVICE=cuda``) the
step replayed as CUDA graphs agrees with the eager step within bf16 tolerance, and is captured
again after a click and after an object is added."""

from __future__ import annotations

import pytest
import torch

from sam2prune import PruningConfig
from sam2prune.cli import embedded_clip
from sam2prune.data.video import VideoSource
from sam2prune.predictor.graphs import WeightCasts, clone_outputs, warm_up
from sam2prune.predictor.static_step import StaticSteps, StaticTrackingStep
from sam2prune.scorers.router.uncertainty import UncertaintyCollection

from conftest import TEST_DEVICE, TINY_SIZE, build_random

NUM_FRAMES = 36
PRUNED = PruningConfig(retention=0.3, scorer="prior")


@pytest.fixture(scope="module")
def source() -> VideoSource:
    return VideoSource.open(embedded_clip()).looped(NUM_FRAMES)


def two_objects(
    predictor, source: VideoSource, *, passes: int = 3
) -> tuple[list[torch.Tensor], StaticSteps, list[int]]:
    """Two objects from frame 0, tracked together; then (``passes`` 3) a correction click on frame
    30 and tracking on from there, and the whole clip in reverse. Returns the logits of every
    frame, the session's static steps and how many frames each pass ran as a static step."""
    state = predictor.init_state(source)
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, points=[[112, 128]], labels=[1])
    steps = predictor.session(state).static_steps
    logits, replays = [], []

    def run(frames) -> None:
        before = sum(step.replays for step in steps.steps.values())
        logits.extend(m.clone() for _, _, m in frames)
        replays.append(sum(step.replays for step in steps.steps.values()) - before)

    run(predictor.propagate_in_video(state))
    if passes == 1:
        return logits, steps, replays
    predictor.add_new_points_or_box(state, 30, 2, points=[[100, 100]], labels=[0], clear_old_points=False)
    run(predictor.propagate_in_video(state, start_frame_idx=30))
    run(predictor.propagate_in_video(state, start_frame_idx=NUM_FRAMES - 1, reverse=True))
    return logits, steps, replays


@pytest.fixture(scope="module")
def eager_logits(source):
    """The logits of sam2's step (static step off), by retention, computed once."""
    cache: dict[tuple[float, int], list[torch.Tensor]] = {}

    def logits(pruning: PruningConfig, passes: int) -> list[torch.Tensor]:
        if (pruning.retention, passes) not in cache:
            eager = build_random(TINY_SIZE, seed=3, pruning=pruning, device=TEST_DEVICE)
            cache[pruning.retention, passes], unused, no_replays = two_objects(eager, source, passes=passes)
            assert not unused.steps and no_replays == [0] * passes
        return cache[pruning.retention, passes]

    return logits


# first in the module: gpu.sh's test step keeps to a time limit, and this is the test it is for
@pytest.mark.skipif(TEST_DEVICE != "cuda", reason="CUDA graphs need a GPU (SAM2PRUNE_TEST_DEVICE=cuda)")
@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
def test_graph_replay_agrees_with_the_eager_step_and_is_captured_again(source, bf16):
    def tracked(mode: str) -> tuple[list[torch.Tensor], StaticSteps, list[int]]:
        predictor = build_random(TINY_SIZE, seed=3, pruning=PRUNED, device="cuda")
        predictor.set_static_step(mode)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits, steps, replays = two_objects(predictor, source)
            # a third object joins on frame 20: a batch of another shape, captured anew
            state = predictor.init_state(source)
            predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
            predictor.add_new_points_or_box(state, 20, 3, points=[[150, 150]], labels=[1])
            logits += [m.clone() for _, _, m in predictor.propagate_in_video(state)]
            later = predictor.session(state).static_steps
        graphs = [step.graph is not None for step in [*steps.steps.values(), *later.steps.values()]]
        if mode == "graphs":  # the image encoder too, on the one frame shape
            (encoder,) = predictor.static_encoders.values()
            assert encoder.runner.graph is not None, encoder.runner.capture_error
        return logits, steps, [*replays, later.builds, sum(graphs), len(graphs)]

    sam2_step, _, _ = tracked("off")
    eager, _, _ = tracked("buffers")
    graphed, steps, counts = tracked("graphs")
    assert counts[:3] == [NUM_FRAMES - 16, NUM_FRAMES - 30, NUM_FRAMES - 16]
    errors = [step.capture_error for step in steps.steps.values() if step.capture_error]
    assert counts[3] >= 1 and counts[4] == counts[5] >= 3, errors  # every step was captured
    assert len(graphed) == len(eager) == len(sam2_step)
    for frame, (a, b, c) in enumerate(zip(sam2_step, eager, graphed, strict=True)):
        assert torch.isfinite(c).all(), f"frame {frame}"
        if not bf16:  # a graph replays the eager step's kernels, which compute sam2's step
            torch.testing.assert_close(c, b, atol=1e-4, rtol=0, msg=f"frame {frame}")
            torch.testing.assert_close(b, a, atol=1e-4, rtol=0, msg=f"frame {frame}")
        elif frame < NUM_FRAMES:  # bf16: before rounding differences can change which tokens are kept
            assert ((b > 0) != (c > 0)).float().mean() < 0.02, f"frame {frame}"
            assert ((a > 0) != (b > 0)).float().mean() < 0.02, f"frame {frame}"


# dense (retention 1.0): the first pass only, to keep the suite short
@pytest.mark.parametrize("pruning, passes", [(PRUNED, 3), (PruningConfig(retention=1.0), 1)], ids=["pruned", "dense"])
def test_static_step_gives_the_eager_steps_logits_bit_for_bit(source, eager_logits, pruning, passes):
    expected = eager_logits(pruning, passes)
    static = build_random(TINY_SIZE, seed=3, pruning=pruning, device=TEST_DEVICE)
    static.set_static_step("buffers")
    logits, steps, replays = two_objects(static, source, passes=passes)
    assert len(logits) == len(expected) == (NUM_FRAMES if passes == 1 else 3 * NUM_FRAMES - 30)
    for frame, (a, b) in enumerate(zip(expected, logits, strict=True)):
        if TEST_DEVICE == "cpu":
            assert torch.equal(a, b), f"frame {frame}: max difference {(a - b).abs().max().item()}"
        else:  # GPU kernels may pick other reduction orders for the same shapes
            torch.testing.assert_close(b, a, atol=1e-4, rtol=0, msg=f"frame {frame}")
    # the steady state starts once 15 tracked frames carry pointers (frame 16 forward, 28 in
    # reverse from the end); the correction pass continues in it from frame 30
    assert replays == [NUM_FRAMES - 16, NUM_FRAMES - 30, NUM_FRAMES - 16][:passes]
    # buffers made for two shapes (forward with the prompt's pointer, reverse without), and
    # filled from sam2's outputs once per pass
    assert steps.builds == min(passes, 2) and steps.fills == passes
    step = next(iter(steps.steps.values()))
    assert step.shape.batch == 2 and step.shape.slots == 6 and step.shape.pointer_slots == 15
    assert step.shape.kept == (20 if pruning.retention < 1 else 64)  # ceil(0.3 * 8 * 8) of 64 tokens


def test_a_graphs_warm_up_leaves_the_buffers_as_they_were(source, eager_logits, monkeypatch):
    """Capturing a CUDA graph first runs the step on the buffers (warm-up), then captures it
    without running it: the warm-up must leave every buffer the step writes as it was, or the
    frame would read the rings a step ahead. Here every static frame of a pass is warmed up first."""
    expected = eager_logits(PRUNED, 3)[:NUM_FRAMES]  # its first pass
    warmed = []
    run = StaticTrackingStep.run

    def warm_up_first(step, body, *args, **kwargs):
        warm_up(body, written=step.mutable(), runs=2)
        warmed.append(step)
        return run(step, body, *args, **kwargs)

    monkeypatch.setattr(StaticTrackingStep, "run", warm_up_first)
    predictor = build_random(TINY_SIZE, seed=3, pruning=PRUNED, device=TEST_DEVICE)
    predictor.set_static_step("buffers")
    logits, _, replays = two_objects(predictor, source, passes=1)
    assert len(warmed) == sum(replays) == NUM_FRAMES - 16
    for frame, (a, b) in enumerate(zip(expected, logits, strict=True)):
        torch.testing.assert_close(b, a, atol=1e-4 if TEST_DEVICE != "cpu" else 0, rtol=0, msg=f"frame {frame}")


def test_a_warm_up_that_fails_also_leaves_the_buffers_as_they_were():
    """A capture whose warm-up fails (out of memory, say) gives way to the eager run, which must
    read the buffers as they were before the warm-up wrote them."""
    ring = torch.arange(4.0)
    runs = []

    def body():
        ring.add_(10)  # what the step writes in place
        runs.append(1)
        if len(runs) == 2:
            raise torch.cuda.OutOfMemoryError("out of memory")
        return {}

    with pytest.raises(torch.cuda.OutOfMemoryError):
        warm_up(body, written=[ring], runs=2)
    assert torch.equal(ring, torch.arange(4.0))


@pytest.mark.parametrize(
    "pruning",
    [PruningConfig(retention=0.3, scorer="prior"), PruningConfig(retention=0.3)],
    ids=["prior", "router-analytic"],  # the default router: visual, analytic uncertainty, prior
)
def test_under_autocast_the_static_step_and_encoder_compute_with_weights_cast_once(source, pruning, monkeypatch):
    """bf16 autocast (on the CPU here): the static step and the image encoder run with their
    layers' weights cast once, and give sam2's logits bit for bit (autocast's own cast gives the
    same values); sam2's step casts them at every call. The router's uncertainty is measured
    inside the static encoder and is the same bits. On CUDA, both also replayed as CUDA graphs."""
    short = source.head(20)
    signals: list[torch.Tensor] = []  # the uncertainty signal of every frame encoded
    signal = UncertaintyCollection.signal
    monkeypatch.setattr(
        UncertaintyCollection, "signal", lambda self, grid: signals.append(signal(self, grid)) or signals[-1]
    )

    def tracked(mode: str) -> tuple[list[torch.Tensor], set[str], int, int]:
        predictor = build_random(TINY_SIZE, seed=3, pruning=pruning, device=TEST_DEVICE)
        predictor.set_static_step(mode)
        seen = set()
        for part, layer in (
            ("step", predictor.memory_attention.layers[0].self_attn.q_proj),
            ("encoder", predictor.image_encoder.trunk.blocks[0].attn.qkv),
        ):
            layer.register_forward_pre_hook(lambda module, _, part=part: seen.add(f"{part} {module.weight.dtype}"))
        with torch.autocast(TEST_DEVICE, dtype=torch.bfloat16):
            state = predictor.init_state(short)
            predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
            logits = [m.clone() for _, _, m in predictor.propagate_in_video(state)]
        steps = predictor.session(state).static_steps.steps.values()
        if mode == "graphs":
            runners = [step.runner for step in steps] + [
                encoder.runner for encoder in predictor.static_encoders.values()
            ]
            assert all(runner.graph is not None for runner in runners), [runner.capture_error for runner in runners]
        replays = sum(step.replays for step in steps)
        encoded = sum(encoder.runs for encoder in predictor.static_encoders.values())
        return logits, seen, replays, encoded

    sam2_step, sam2_seen, _, _ = tracked("off")
    sam2_signals = signals[:]
    signals.clear()
    static, static_seen, replays, encoded = tracked("buffers")
    static_signals = signals[:]
    assert len(static_signals) == len(sam2_signals) == (20 if pruning.scorer == "router" else 0)
    exact = TEST_DEVICE == "cpu"  # GPU kernels may pick other reduction orders for the same shapes
    for frame, (a, b) in enumerate(zip(sam2_signals, static_signals, strict=True)):
        torch.testing.assert_close(b, a, atol=0 if exact else 1e-2, rtol=0, msg=f"uncertainty of frame {frame}")
    assert replays == 20 - 16 and encoded == 20
    assert sam2_seen == {"step torch.float32", "encoder torch.float32"}
    # frames before the steady state run sam2's step; every frame runs the static encoder
    assert static_seen == {"step torch.float32", "step torch.bfloat16", "encoder torch.bfloat16"}
    for frame, (a, b) in enumerate(zip(sam2_step, static, strict=True)):
        if exact:
            assert torch.equal(a, b), f"frame {frame}: max difference {(a - b).abs().max().item()}"
        else:
            assert ((a > 0) != (b > 0)).float().mean() < 0.02, f"frame {frame}"
    if TEST_DEVICE == "cuda":  # the same as CUDA graphs: the step, and the encoder with the probe inside
        signals.clear()
        graphed, graphed_seen, replays, encoded = tracked("graphs")
        assert replays == 20 - 16 and encoded == 20 and graphed_seen == static_seen
        for frame, (a, b) in enumerate(zip(static_signals, signals, strict=True)):
            torch.testing.assert_close(b, a, atol=1e-2, rtol=0, msg=f"uncertainty of frame {frame}")
        for frame, (a, b) in enumerate(zip(static, graphed, strict=True)):
            assert ((a > 0) != (b > 0)).float().mean() < 0.02, f"frame {frame}"


def test_weight_casts_follow_weights_changed_in_place_and_refuse_replaced_ones():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Conv2d(3, 2, 1))
    casts = WeightCasts(model, torch.bfloat16)
    # linear and convolution weights and biases; the layer norm's stay float32 (autocast runs it in float32)
    assert [(type(m).__name__, name) for m, name, _ in casts.entries] == [
        ("Linear", "weight"),
        ("Linear", "bias"),
        ("Conv2d", "weight"),
        ("Conv2d", "bias"),
    ]
    with casts.swapped():
        assert model[0].weight.dtype == torch.bfloat16 and model[1].weight.dtype == torch.float32
    assert model[0].weight.dtype == torch.float32  # put back
    changed = {key: value + 1 for key, value in model.state_dict().items()}
    model.load_state_dict(changed)  # in place
    casts.refresh()
    with casts.swapped():
        assert torch.equal(model[0].weight, changed["0.weight"].to(torch.bfloat16))
        assert torch.equal(model[2].bias, changed["2.bias"].to(torch.bfloat16))
    model[2].weight = torch.nn.Parameter(torch.zeros(2, 3, 1, 1))
    with pytest.raises(RuntimeError, match=r"a weight of a Conv2d \(weight\) was replaced"), casts.swapped():
        pass
    assert model[0].weight.dtype == torch.float32  # the layers swapped before the error are put back


def test_a_graphs_outputs_are_copied_once_each_and_constants_handed_out():
    features, position = torch.zeros(2), torch.ones(3)
    outputs = {"vision_features": features, "backbone_fpn": [torch.zeros(1), features], "vision_pos_enc": [position]}
    copied = clone_outputs(outputs, constant=("vision_pos_enc",))
    assert copied["vision_features"] is copied["backbone_fpn"][1]  # one tensor in two places stays one
    assert copied["vision_features"] is not features and copied["backbone_fpn"][0] is not outputs["backbone_fpn"][0]
    assert copied["vision_pos_enc"][0] is position and copied["vision_pos_enc"] is not outputs["vision_pos_enc"]


def test_static_steps_and_encoders_are_made_anew_when_what_they_froze_changes(source):
    predictor = build_random(TINY_SIZE, seed=3, pruning=PRUNED, device=TEST_DEVICE)
    predictor.set_static_step("buffers")
    state = predictor.init_state(source.head(18))
    predictor.add_new_points_or_box(state, 0, 1, points=[[200, 112]], labels=[1])
    steps = predictor.session(state).static_steps

    def track() -> None:
        for _ in predictor.propagate_in_video(state):
            pass

    track()
    assert steps.builds == 1 and len(predictor.static_encoders) == 1
    track()  # nothing changed: the same step (filled again) and encoder
    assert steps.builds == 1 and len(predictor.static_encoders) == 1
    predictor.set_static_step("buffers")  # as after weights were replaced: every graph made anew
    assert not predictor.static_encoders and not predictor.weight_casts
    track()
    assert steps.builds == 2 and len(predictor.static_encoders) == 1
    with torch.autocast(TEST_DEVICE, dtype=torch.bfloat16):  # other dtypes, and weights cast
        track()
    assert (
        steps.builds == 3 and len(predictor.static_encoders) == 2 and list(predictor.weight_casts) == [torch.bfloat16]
    )


def test_static_step_modes_are_checked():
    predictor = build_random(TINY_SIZE, pruning=PRUNED)
    with pytest.raises(ValueError, match="one of off, buffers, graphs"):
        predictor.set_static_step("fast")
    if TEST_DEVICE != "cuda":
        with pytest.raises(ValueError, match="captures CUDA graphs: the predictor runs on cpu"):
            predictor.set_static_step("graphs")
    assert predictor.static_step == "off"  # unchanged by the refused modes


# in gpu.sh's optional last test step only: a capture the body breaks is a CUDA error of its own
@pytest.mark.skipif(TEST_DEVICE != "cuda", reason="CUDA graphs need a GPU (SAM2PRUNE_TEST_DEVICE=cuda)")
def test_a_capture_the_body_breaks_runs_eagerly_on_the_stream_it_was_called_on():
    """torch.cuda.graph ends the capture before restoring the current stream: a capture broken by
    a host sync left the capture's side stream current for the rest of the process."""
    from sam2prune.predictor.graphs import GraphRunner

    device = torch.device("cuda")
    before = torch.cuda.current_stream(device)
    values = torch.arange(4.0, device=device)
    calls = []

    def body() -> dict:
        calls.append(torch.cuda.is_current_stream_capturing())
        if calls[-1]:
            torch.cuda.synchronize(device)  # not allowed while capturing
        return {"out": values * 2}

    runner = GraphRunner("a broken body", device, capture=True)
    result = runner(body)
    assert runner.graph is None and runner.capture_error is not None
    assert torch.cuda.current_stream(device) == before
    assert torch.equal(result["out"], values * 2) and calls[-1] is False
