"""The token-pruned predictor: sam2's hooks where tokens are chosen, stored and read back."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from sam2prune.config import PruningConfig
from sam2prune.predictor.attention import dropped_token_fill, gather_tokens, scatter_tokens, sparse_memory_attention
from sam2prune.predictor.bank import BankMemory, SparseMemoryBank
from sam2prune.predictor.baseline import BatchedOutputs, SAM2Predictor, log
from sam2prune.predictor.graphs import StaticImageEncoder, WeightCasts, autocast_dtype
from sam2prune.predictor.static_step import (
    OUTPUT_KEYS,
    StaticStepMode,
    StaticSteps,
    StaticTrackingStep,
    StepShape,
    check_mode,
    steady_frame,
)
from sam2prune.scoped import scoped
from sam2prune.scorers import ScoringContext, make_scorer, select_tokens
from sam2prune.scorers.baselines import Memo, TokenScorer, compute_every_time
from sam2prune.scorers.prior import prompt_mask
from sam2prune.scorers.router.uncertainty import UncertaintyProbe

if TYPE_CHECKING:
    from sam2prune.predictor.session import TrackingSession
    from sam2prune.scorers.router.fusion import RouterScorer


@dataclass(frozen=True)
class FrameInFlight:
    """The frame being tracked for one object (or a batch of objects), while sam2's
    ``track_step`` runs: sam2 passes its memory-attention hook the output dict but not the
    session, so the banks and the chosen tokens travel in a context variable scoped to that
    one call.

    Attributes:
        banks: the memory bank of each object, in batch order.
        keep_idx: ``[B, k]`` the frame's kept tokens, or None (dense queries).
        memo: what depends on the frame alone, shared by its objects (``FrameCache.get`` of
            the session, bound to the frame).
        steps: the session's static steps, when the frame may run as one (``static_step``).
        static: the static step running the frame: memory attention reads its buffers.
    """

    banks: tuple[SparseMemoryBank, ...]
    keep_idx: torch.Tensor | None
    memo: Memo = compute_every_time
    steps: StaticSteps | None = None
    static: StaticTrackingStep | None = None


UNCERTAINTY_MAPS = "sam2prune_uncertainty_maps"  # the probe's maps among a static encoder's outputs
_IN_FLIGHT: ContextVar[FrameInFlight | None] = ContextVar("sam2prune_frame_in_flight", default=None)


class PrunedSAM2VideoPredictor(SAM2Predictor):
    """SAM 2's video predictor with token pruning between the image encoder and memory attention.

    On every tracked frame a scorer ranks the frame's stride-16 tokens and the top
    ``retention`` fraction (``keep_idx``, per object, ascending grid order) becomes the memory
    attention queries; memory attention attends to each memory frame's stored tokens only, with
    each token's own rotary position; its output is scattered back into the dense grid for the
    mask decoder (dropped positions get ``PruningConfig.fill``); the memory encoder runs dense and
    only the kept tokens are stored in the object's ``SparseMemoryBank``.

    Frames with user prompts run memory attention dense; their memory is stored dense unless
    ``prune_conditioning_frames`` (then scored on the frame's own mask and prompt). At retention
    1.0 nothing is scored, gathered, scattered or stored besides sam2's own outputs. Public API
    and checkpoints: those of SAM 2. Per-video state lives in a ``TrackingSession`` on the
    inference state.
    """

    # steady-state tracked frames as one static-shape step over preallocated buffers, and the
    # image encoder on a fixed input: "off" (sam2's step and encoder), "buffers" (both run
    # eagerly on the buffers), "graphs" (both replayed as CUDA graphs)
    static_step: StaticStepMode = "off"
    MAX_STATIC_ENCODERS = 2  # frame shapes whose encoder graphs are kept

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uncertainty_probe: UncertaintyProbe | None = None
        # with the static step: the weights cast once under autocast (by dtype), and the
        # image encoder on a fixed input (by input shape, dtype, autocast, mode and casts)
        self.weight_casts: dict[torch.dtype, WeightCasts] = {}
        self.static_encoders: OrderedDict[tuple, StaticImageEncoder] = OrderedDict()
        self.graph_generation = 0  # a session's static steps made in an older one are not used
        self.set_pruning(PruningConfig())

    def set_static_step(self, mode: str) -> None:
        """Run steady-state tracked frames as a static-shape step, and the image encoder on a
        fixed input (see ``static_step``). Every graph and weight cast is made anew (``release_graphs``).

        A captured graph reads the tensors it was captured with: weights changed in place (as
        ``load_state_dict`` does) are followed, but after weights are replaced (assigned anew,
        ``load_state_dict(assign=True)``, ``.data`` set, the model moved) call this again.

        Raises:
            ValueError: an unknown mode, or ``graphs`` on a predictor not on CUDA.
        """
        self.static_step = check_mode(mode, self.device)
        self.release_graphs()

    def release_graphs(self) -> None:
        """Drop the image encoder's graphs and the weight casts, and make every session's static
        steps build (and capture) theirs anew: their memory is freed; they are made again
        when next needed."""
        self.weight_casts.clear()
        self.static_encoders.clear()
        self.graph_generation += 1

    def _weight_casts(self, device: torch.device) -> WeightCasts | None:
        """The weights cast once to the autocast dtype in effect (None outside a lower-precision
        autocast), up to date."""
        dtype = autocast_dtype(device)
        if dtype not in (torch.bfloat16, torch.float16):
            return None
        casts = self.weight_casts.get(dtype)
        if casts is None:
            casts = self.weight_casts[dtype] = WeightCasts(self, dtype)
        else:
            casts.refresh()
        return casts

    def forward_image(self, img_batch: torch.Tensor) -> dict:
        """sam2's. With the static step on, the encoder runs on a fixed input tensor (its shape
        is the same for every frame) with the weights cast once under autocast: replayed as a
        CUDA graph in mode ``graphs``, the uncertainty probe's closed form (``analytic``) inside
        it. Not with the probe's sampled masks (``mc``), nor with gradients on."""
        probe = self.uncertainty_probe
        if self.static_step == "off" or (probe is not None and not probe.capturable) or torch.is_grad_enabled():
            return super().forward_image(img_batch)
        device = img_batch.device
        casts = self._weight_casts(device)
        capture = self.static_step == "graphs"
        key = (
            tuple(img_batch.shape),
            img_batch.dtype,
            device,
            autocast_dtype(device),
            capture,
            id(casts),
            probe.signature if probe is not None else None,
        )
        encoder = self.static_encoders.get(key)
        if encoder is None:
            encoder = StaticImageEncoder(tuple(img_batch.shape), img_batch.dtype, device, capture=capture)
            self.static_encoders[key] = encoder
            while len(self.static_encoders) > self.MAX_STATIC_ENCODERS:
                self.static_encoders.popitem(last=False)
        self.static_encoders.move_to_end(key)
        forward = super().forward_image

        def body() -> dict:
            # the probe's maps of this pass come out with the encoder's outputs (a graph writes
            # them at every replay), gathered in a collection of the pass's own
            with casts.swapped() if casts is not None else nullcontext():
                if probe is None:
                    return forward(encoder.image)
                with probe.collect() as collected:
                    outputs = forward(encoder.image)
                return {**outputs, UNCERTAINTY_MAPS: collected.variances}

        outputs = encoder.run(body, img_batch)
        if probe is not None:
            probe.extend(outputs.pop(UNCERTAINTY_MAPS))
        return outputs

    def set_pruning(self, pruning: PruningConfig) -> None:
        """Use another pruning config: builds its scorer (loading the aligner, text encoder and
        router weights it names) and attaches the uncertainty probe if the router needs it.

        Meant between sessions. Within one, frames tracked from here on use the new config; with
        bounded memory, a click or pass that reads frames dropped after they were tracked under
        the old one raises (``_recompute``), since they cannot be tracked again as they were.

        Raises:
            InputError: a file the config names is missing or does not fit this model.
        """
        from sam2prune.scorers.router.fusion import build_router_scorer

        if not isinstance(pruning, PruningConfig):
            raise TypeError(f"pruning must be a PruningConfig, got {type(pruning).__name__}")
        # build everything new first: on an error the predictor keeps its previous config
        scorer: TokenScorer
        router: RouterScorer | None = None
        if pruning.scorer == "router":
            scorer = router = build_router_scorer(
                pruning,
                channels=self.hidden_dim,
                model_name=self.model_name,
                image_size=self.image_size,
                random_router=self.random_weights,
                log=log.warning,
            )
        else:
            scorer = make_scorer(pruning)
        self.pruning = pruning
        self.scorer = scorer
        self.pruning_generation += 1
        needs_uncertainty = router is not None and "uncertainty" in router.signals and not self.keeps_everything
        self.attach_uncertainty(pruning if needs_uncertainty else None)

    @property
    def keeps_everything(self) -> bool:
        """Retention keeps every token (k = N): pruning is the identity."""
        return self.pruning.kept_count(self.num_tokens) == self.num_tokens

    @property
    def reads_neighbour_mask(self) -> bool:
        """The scorer's prior reads the previous frame's mask logits."""
        return not self.keeps_everything and self.scorer.needs_prior

    def attach_uncertainty(self, config: PruningConfig | None) -> None:
        """Attach an uncertainty probe to the image encoder with ``config``'s blocks and
        dropout (None: detach it)."""
        if self.uncertainty_probe is not None:
            self.uncertainty_probe.detach()
            self.uncertainty_probe = None
        if config is not None:
            self.uncertainty_probe = UncertaintyProbe(
                self.image_encoder.trunk,
                config.uncertainty_blocks,
                mode=config.uncertainty,
                p=config.mc_dropout_p,
                passes=config.mc_passes,
                seed=config.seed,
            )

    # --- per-session state -------------------------------------------------------------------

    def set_object_text(self, inference_state: dict, obj_id: int, text: str) -> None:
        """Describe one object of a session for the text signal (overrides ``pruning.text``)."""
        if not text or not text.strip():
            raise ValueError(f"the text of object {obj_id} must not be empty")
        session = self.session(inference_state)
        session.object_texts[obj_id] = text
        if obj_id in session.banks:  # frames tracked from here on read the new text: a run of their own
            session.banks[obj_id].end_run()

    def tracking_text(self, session: TrackingSession, obj_id: int) -> str | None:
        """The object's text, where the router's text signal reads it."""
        if self.pruning.scorer != "router" or "text" not in self.pruning.active_signals():
            return None
        return session.object_text(obj_id, self.pruning.text)

    # --- choosing the tokens ------------------------------------------------------------------

    def _encode(self, image: torch.Tensor, frame_idx: int) -> tuple[dict, torch.Tensor | None]:
        if self.uncertainty_probe is None:
            return super()._encode(image, frame_idx)
        self.uncertainty_probe.seed_for(frame_idx)
        with self.uncertainty_probe.collect() as collected:
            backbone_out = self.forward_image(image)
        side = self.sam_image_embedding_size
        return backbone_out, collected.signal((side, side))

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        """sam2's, plus the token uncertainty of a frame it encodes (kept on the session as
        long as sam2 caches the frame's features). A frame cached without it is encoded again:
        sam2's ``reset_state`` keeps the cached features while the session starts anew, and a
        config set since (``set_pruning``) may have attached the probe, or another one, after it
        was encoded: the uncertainty is keyed by the config's generation too."""
        if self.uncertainty_probe is None:
            return super()._get_image_feature(inference_state, frame_idx, batch_size)
        key = (self.pruning_generation, frame_idx)
        if frame_idx in inference_state["cached_features"]:
            if key in self.session(inference_state).uncertainty:
                return super()._get_image_feature(inference_state, frame_idx, batch_size)
            del inference_state["cached_features"][frame_idx]
        self.uncertainty_probe.seed_for(frame_idx)
        with self.uncertainty_probe.collect() as collected:
            features = super()._get_image_feature(inference_state, frame_idx, batch_size)
        side = self.sam_image_embedding_size
        self.session(inference_state).uncertainty = {key: collected.signal((side, side))}
        return features

    def _frame_tokens(
        self, inference_state: dict, frame_idx: int, batch_size: int
    ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """(tokens ``[B, N, C]``, grid ``(H, W)``, uncertainty ``[B, N]`` or None) of a frame."""
        _, _, vision_feats, _, feat_sizes = self._get_image_feature(inference_state, frame_idx, batch_size)
        uncertainty = self.session(inference_state).uncertainty.get((self.pruning_generation, frame_idx))
        if uncertainty is not None:
            uncertainty = uncertainty.expand(batch_size, -1)
        return vision_feats[-1].transpose(0, 1), tuple(feat_sizes[-1]), uncertainty

    def score_tokens(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        """The kept tokens ``[B, k]`` of ``tokens`` ``[B, N, C]``, ascending."""
        scores = self.scorer(tokens, context)
        return select_tokens(scores, self.pruning.kept_count(tokens.shape[1]))

    def _score_frame(
        self, inference_state: dict, obj_id: int, frame_idx: int, batch_size: int, prior: torch.Tensor | None
    ) -> torch.Tensor:
        """Kept tokens ``[B, k]`` of one object on a frame, given where it is believed to be."""
        tokens, grid, uncertainty = self._frame_tokens(inference_state, frame_idx, batch_size)
        session = self.session(inference_state)
        context = ScoringContext(
            frame_idx=frame_idx,
            grid=grid,
            prior_mask=prior,
            uncertainty=uncertainty,
            text=session.object_text(obj_id, self.pruning.text),
            memo=partial(session.frame_cache.get, frame_idx),
        )
        return self.score_tokens(tokens, context)

    def _prior_of(self, output_dict: dict, frame_idx: int, reverse: bool) -> torch.Tensor | None:
        """The neighbouring frame's mask logits in the tracking direction, if it has an output."""
        neighbour = frame_idx + 1 if reverse else frame_idx - 1
        previous = output_dict["cond_frame_outputs"].get(neighbour)
        if previous is None:
            previous = output_dict["non_cond_frame_outputs"].get(neighbour)
        return None if previous is None else previous.get("pred_masks")

    def _prunes(self, output_dict: dict, frame_idx: int, reverse: bool) -> bool:
        """Whether a tracked frame of this object is pruned (else it runs dense: retention 1.0,
        or the scorer needs a prior and the neighbouring frame has no output, e.g. tracking
        started mid-video or memory was cleared)."""
        if self.keeps_everything:
            return False
        return not self.scorer.needs_prior or self._prior_of(output_dict, frame_idx, reverse) is not None

    def _select_tracked_frame(
        self, inference_state: dict, obj_id: int, output_dict: dict, frame_idx: int, batch_size: int, reverse: bool
    ) -> torch.Tensor | None:
        """Kept tokens ``[B, k]`` of a frame being tracked, or None to run it dense."""
        if not self._prunes(output_dict, frame_idx, reverse):
            return None
        prior = self._prior_of(output_dict, frame_idx, reverse) if self.scorer.needs_prior else None
        return self._score_frame(inference_state, obj_id, frame_idx, batch_size, prior)

    def _select_prompted_frame(
        self, inference_state: dict, obj_id: int, frame_idx: int, out: dict, point_inputs: dict | None
    ) -> torch.Tensor:
        """Kept tokens of a prompted frame, scored on its own mask plus its clicks/box."""
        own_mask = out["pred_masks"].to(self.device)
        prompted = prompt_mask(
            point_inputs["point_coords"] if point_inputs else None,
            point_inputs["point_labels"] if point_inputs else None,
            size=tuple(own_mask.shape[-2:]),
            image_size=self.image_size,
        )
        prior = (
            own_mask
            if prompted is None
            else torch.where(prompted.to(own_mask.device) > 0, own_mask.abs() + 1, own_mask)
        )
        return self._score_frame(inference_state, obj_id, frame_idx, 1, prior)

    # --- sam2 hooks ---------------------------------------------------------------------------

    def _infer_frame(
        self,
        inference_state,
        output_dict,
        frame_idx,
        batch_size,
        is_init_cond_frame,
        point_inputs,
        mask_inputs,
        reverse,
        run_mem_encoder,
        prev_sam_mask_logits=None,
    ):
        session = self.session(inference_state)
        memo = partial(session.frame_cache.get, frame_idx)
        steps = session.static_steps if self.static_step != "off" and not session.replaying else None
        if isinstance(output_dict, BatchedOutputs):  # objects of one memory layout, tracked together
            banks = tuple(session.bank_of(inference_state, d) for d in output_dict.dicts)  # or a replay's
            rows = [
                self._select_tracked_frame(inference_state, bank_id, bank.output_dict, frame_idx, 1, reverse)
                for bank_id, bank in zip(output_dict.obj_ids, banks, strict=True)
            ]
            kept_rows = [row for row in rows if row is not None]
            if kept_rows and len(kept_rows) != len(rows):
                raise RuntimeError("objects batched together must be all pruned or all dense on a frame")
            output_dict.keep_idx = torch.cat(kept_rows) if kept_rows else None
            flight = FrameInFlight(banks=banks, keep_idx=output_dict.keep_idx, memo=memo, steps=steps)
        else:
            obj_id = session.object_id(inference_state, output_dict)
            bank = session.bank_of(inference_state, output_dict)  # the object's, or a replay's
            keep_idx = None
            if point_inputs is None and mask_inputs is None and not is_init_cond_frame:
                keep_idx = self._select_tracked_frame(
                    inference_state, obj_id, output_dict, frame_idx, batch_size, reverse
                )
            flight = FrameInFlight(banks=(bank,), keep_idx=keep_idx, memo=memo, steps=steps)
        keep_idx = flight.keep_idx
        with scoped(_IN_FLIGHT, flight):
            out, pred_masks = super()._infer_frame(
                inference_state,
                output_dict,
                frame_idx,
                batch_size,
                is_init_cond_frame,
                point_inputs,
                mask_inputs,
                reverse,
                run_mem_encoder,
                prev_sam_mask_logits,
            )
        if (
            keep_idx is not None
            and out.get("maskmem_features") is not None
            and not isinstance(output_dict, BatchedOutputs)
        ):
            flight.banks[0].store_sparse(frame_idx, out, keep_idx, storage_device=inference_state["storage_device"])
        return out, pred_masks

    def track_step(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        point_inputs,
        mask_inputs,
        output_dict,
        num_frames,
        track_in_reverse=False,
        run_mem_encoder=True,
        prev_sam_mask_logits=None,
    ):
        """sam2's ``track_step``; a steady-state tracked frame runs as the static step instead
        when ``static_step`` is on (the same computation on fixed buffers)."""
        frame = _IN_FLIGHT.get()
        if (
            frame is not None
            and frame.steps is not None
            and frame.static is None
            and not is_init_cond_frame
            and point_inputs is None
            and mask_inputs is None
            and run_mem_encoder
            and prev_sam_mask_logits is None
        ):
            step = self._ready_static_step(
                frame,
                frame_idx,
                current_vision_feats,
                current_vision_pos_embeds,
                feat_sizes,
                num_frames,
                track_in_reverse,
            )
            if step is not None:
                outputs = self._run_static_step(
                    step,
                    current_vision_feats,
                    current_vision_pos_embeds,
                    frame.keep_idx,
                    frame_idx=frame_idx,
                    reverse=track_in_reverse,
                )
                return {"point_inputs": None, "mask_inputs": None, **outputs}
        return super().track_step(
            frame_idx,
            is_init_cond_frame,
            current_vision_feats,
            current_vision_pos_embeds,
            feat_sizes,
            point_inputs,
            mask_inputs,
            output_dict,
            num_frames,
            track_in_reverse,
            run_mem_encoder,
            prev_sam_mask_logits,
        )

    def _ready_static_step(
        self,
        frame: FrameInFlight,
        frame_idx: int,
        current_vision_feats: list[torch.Tensor],
        current_vision_pos_embeds: list[torch.Tensor],
        feat_sizes: list[tuple[int, int]],
        num_frames: int,
        reverse: bool,
    ) -> StaticTrackingStep | None:
        """The static step for a tracked frame, filled for it; None when the frame is not in
        the steady state (it runs sam2's step)."""
        assert frame.steps is not None
        kept = None if frame.keep_idx is None else frame.keep_idx.shape[1]
        steady = steady_frame(self, frame.banks, frame_idx, reverse=reverse, num_frames=num_frames, kept=kept)
        if steady is None or len(frame.banks) != current_vision_feats[-1].shape[1]:
            return None
        shape = StepShape(
            batch=len(frame.banks),
            kept=self.num_tokens if kept is None else kept,
            dense=kept is None,
            slots=self.num_maskmem - 1,
            pointer_slots=len(steady.pointer_frames),
            cond_tokens=steady.cond_tokens,
            cond_pointers=len(steady.cond_pointer_frames),
            feature_inputs=tuple((tuple(x.shape), x.dtype) for x in current_vision_feats),
            position_inputs=tuple((tuple(x.shape), x.dtype) for x in current_vision_pos_embeds),
            feat_sizes=tuple((int(h), int(w)) for h, w in feat_sizes),
            position_dtype=steady.spatial[0][0]["maskmem_pos_enc"][-1].dtype,
            pointer_dtype=steady.pointers[0][0]["obj_ptr"].dtype,
            num_tokens=self.num_tokens,
            device=current_vision_feats[-1].device,
            fill=self.pruning.fill,
            autocast=autocast_dtype(current_vision_feats[-1].device),
        )
        return frame.steps.ready(
            self,
            frame.banks,
            steady,
            shape,
            frame_idx,
            reverse=reverse,
            num_frames=num_frames,
            capture=self.static_step == "graphs",
            weights=self._weight_casts(shape.device),
            generation=self.graph_generation,
        )

    def _run_static_step(
        self,
        step: StaticTrackingStep,
        features: list[torch.Tensor],
        positions: list[torch.Tensor],
        keep_idx: torch.Tensor | None,
        *,
        frame_idx: int,
        reverse: bool,
    ) -> dict:
        """Track a steady frame on its static step (one graph replay in mode ``graphs``: the
        bench times it as a whole, ``static_step``)."""
        body = partial(self._static_body, step)
        return step.run(body, features, positions, keep_idx, frame_idx=frame_idx, reverse=reverse)

    def _static_body(self, step: StaticTrackingStep) -> dict:
        """One static step: sam2's ``track_step`` on the step's input buffers, memory attention
        reading the step's memory (``_prepare_memory_conditioned_features``), then the new
        memory written into the step's rings. Nothing here depends on the frame: a CUDA graph
        of it replays for every steady frame."""
        flight = FrameInFlight(banks=(), keep_idx=None if step.shape.dense else step.keep_idx, static=step)
        with scoped(_IN_FLIGHT, flight), step.weights.swapped() if step.weights is not None else nullcontext():
            out = super().track_step(
                0,  # read by memory attention only, which reads the step's buffers instead
                False,
                step.features,
                step.positions,
                list(step.shape.feat_sizes),
                None,
                None,
                {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
                step.num_frames,
                False,
                True,
                None,
            )
        step.write(out["maskmem_features"], out["obj_ptr"])
        return {key: out[key] for key in OUTPUT_KEYS}

    def _batch_key(self, inference_state: dict, obj_idx: int, frame_idx: int, reverse: bool) -> tuple:
        output_dict = inference_state["output_dict_per_obj"][obj_idx]
        return (
            *super()._batch_key(inference_state, obj_idx, frame_idx, reverse),
            self._prunes(output_dict, frame_idx, reverse),
        )

    def _store_batched_row(
        self, inference_state: dict, view: BatchedOutputs, row: int, frame_idx: int, out: dict
    ) -> None:
        if view.keep_idx is not None and out.get("maskmem_features") is not None:
            bank = self.session(inference_state).bank_of(inference_state, view.dicts[row])
            bank.store_sparse(
                frame_idx, out, view.keep_idx[row : row + 1], storage_device=inference_state["storage_device"]
            )

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: dict) -> None:
        """sam2 encodes the memory of prompted frames here, dense, as it merges the outputs of the
        prompts given since the last pass. With ``prune_conditioning_frames`` the tokens of those
        outputs are chosen now (every object's text is known by now, and the prior is the frame's
        own mask) and only those are kept. Outputs tracked before (also on a frame with clicks
        that is not a conditioning frame) stay as they were tracked."""
        merged = {
            id(out)
            for temp in inference_state["temp_output_dict_per_obj"].values()
            for outputs in temp.values()
            for out in outputs.values()
        }
        super().propagate_in_video_preflight(inference_state)
        session = self.session(inference_state)
        session.static_steps.invalidate()  # prompts may have changed the outputs the buffers copy
        if not self.pruning.prune_conditioning_frames or self.keeps_everything:
            return
        for obj_idx, obj_id in inference_state["obj_idx_to_id"].items():
            bank = session.bank(inference_state, obj_id)
            points = inference_state["point_inputs_per_obj"][obj_idx]
            for frame_idx, _, out, keep_idx in list(bank.stored_frames()):
                if id(out) in merged and keep_idx is None and out["maskmem_features"].dim() == 4:
                    keep_idx = self._select_prompted_frame(
                        inference_state, obj_id, frame_idx, out, points.get(frame_idx)
                    )
                    bank.store_sparse(frame_idx, out, keep_idx, storage_device=inference_state["storage_device"])
            bank.recount()

    def _prepare_memory_conditioned_features(
        self,
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        output_dict,
        num_frames,
        track_in_reverse=False,
    ):
        """Memory attention for the kept queries against each memory frame's stored tokens
        (sam2's own computation when nothing is sparse).

        Returns:
            ``[B, C, H, W]`` memory-conditioned features of the whole grid.
        """
        frame = _IN_FLIGHT.get()
        if frame is not None and frame.static is not None:
            memory = frame.static.memory()
            grid = tuple(feat_sizes[-1])
            return self._attend(frame, memory, current_vision_feats[-1], current_vision_pos_embeds[-1], grid)
        # dense (sam2's own computation) when neither the queries nor any memory read is sparse
        dense = frame is None or (
            frame.keep_idx is None
            and not any(bank.reads_sparse(self, frame_idx, track_in_reverse=track_in_reverse) for bank in frame.banks)
        )
        if is_init_cond_frame or self.num_maskmem == 0 or dense:
            if frame is None and any(
                out.get("maskmem_features") is not None and out["maskmem_features"].dim() == 3
                for outputs in output_dict.values()
                for out in outputs.values()
            ):
                raise RuntimeError("sparse memories can only be read within sam2prune's _run_single_frame_inference")
            return super()._prepare_memory_conditioned_features(
                frame_idx,
                is_init_cond_frame,
                current_vision_feats,
                current_vision_pos_embeds,
                feat_sizes,
                output_dict,
                num_frames,
                track_in_reverse,
            )
        assert frame is not None  # no frame in flight reads dense
        return self._sparse_memory_conditioned_features(
            frame,
            frame_idx,
            current_vision_feats[-1],
            current_vision_pos_embeds[-1],
            tuple(feat_sizes[-1]),
            num_frames,
            track_in_reverse,
        )

    def _sparse_memory_conditioned_features(
        self,
        frame: FrameInFlight,
        frame_idx: int,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        grid: tuple[int, int],
        num_frames: int,
        track_in_reverse: bool,
    ) -> torch.Tensor:
        """Args: curr, curr_pos ``[HW, B, C]``. Returns ``[B, C, H, W]``."""
        # each object's memory from its own bank, stacked along the batch (one layout: same shapes)
        memories = [
            bank.memory(
                self,
                frame_idx,
                num_frames=num_frames,
                track_in_reverse=track_in_reverse,
                batch=1,
                device=curr.device,
                dtype=curr.dtype,
            )
            for bank in frame.banks
        ]
        if len(memories) != curr.shape[1]:
            raise RuntimeError(f"{len(memories)} memory banks for a batch of {curr.shape[1]}")
        memory = memories[0] if len(memories) == 1 else BankMemory.stack(memories)
        return self._attend(frame, memory, curr, curr_pos, grid)

    def _attend(
        self,
        frame: FrameInFlight,
        memory: BankMemory,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        grid: tuple[int, int],
    ) -> torch.Tensor:
        """Memory attention of the frame's kept queries (all with ``keep_idx`` None) over
        ``memory``; dropped positions get the fill. Args: curr, curr_pos ``[HW, B, C]``.
        Returns ``[B, C, H, W]``."""
        batch, channels = curr.shape[1], self.hidden_dim
        height, width = grid
        keep_idx = frame.keep_idx
        if keep_idx is None:
            query_cells = torch.arange(height * width, device=curr.device).expand(batch, -1)
            queries, query_pos = curr, curr_pos
        else:
            query_cells = keep_idx.to(curr.device).long()
            queries, query_pos = gather_tokens(curr, query_cells), gather_tokens(curr_pos, query_cells)
        attended = sparse_memory_attention(
            self.memory_attention,
            queries,
            query_pos,
            memory.memory,
            memory.memory_pos,
            query_cells=query_cells,
            memory_cells=memory.memory_cells,
            grid=grid,
            num_obj_ptr_tokens=memory.pointer_tokens,
        )
        if keep_idx is not None:
            fill = curr
            if self.pruning.fill == "norm":
                key = (
                    "dropped-token fill",
                    self.memory_attention,
                    tuple(curr.shape),
                    curr.dtype,
                    autocast_dtype(curr.device),
                )
                fill = frame.memo(key, lambda: dropped_token_fill(self.memory_attention, curr, curr_pos))
            attended = scatter_tokens(fill, query_cells, attended)
        return attended.permute(1, 2, 0).view(batch, channels, height, width)
