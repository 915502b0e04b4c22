"""Video predictors: the official SAM 2 predictor with the fixes we need (the baseline), and
the token-pruned predictor."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sam2.modeling.sam2_base import NO_OBJ_SCORE
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames
from sam2.sam2_video_predictor import SAM2VideoPredictor
from tqdm import tqdm

from sam2prune.attention import (
    RopeTable,
    dropped_token_fill,
    gather_tokens,
    scatter_tokens,
    sparse_memory_attention,
)
from sam2prune.config import PruningConfig
from sam2prune.data.video import VideoSource
from sam2prune.router import ScoringContext, make_scorer, select_tokens
from sam2prune.router.fusion import build_router_scorer
from sam2prune.router.prior import prompt_mask
from sam2prune.router.uncertainty import UncertaintyProbe

log = logging.getLogger("sam2prune")

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

_reported_missing_extension = False


def cuda_extension_available() -> bool:
    """Whether sam2's compiled extension (``sam2._C``, used for hole filling) is importable."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def _report_missing_extension_once(fill_hole_area: int) -> None:
    global _reported_missing_extension
    if not _reported_missing_extension:
        _reported_missing_extension = True
        log.warning(
            "sam2's CUDA extension (sam2._C) is not installed: hole filling of masks "
            "(fill_hole_area=%d) is skipped, as SAM 2 itself does without it",
            fill_hole_area,
        )


class ComponentTimer:
    """Wall-clock seconds spent per model component, per frame (for the benchmark).

    Synchronises CUDA around every measurement when ``synchronize`` is set.
    """

    def __init__(self, *, synchronize: bool = False) -> None:
        self.synchronize = synchronize
        self.seconds: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.seconds = defaultdict(float)

    @contextmanager
    def measure(self, component: str) -> Iterator[None]:
        if self.synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.synchronize:
                torch.cuda.synchronize()
            self.seconds[component] += time.perf_counter() - start


def load_frames_tensor(
    source: VideoSource, image_size: int, *, progress: bool = True
) -> torch.Tensor:
    """Read every frame, resized and normalised exactly as SAM 2's own JPEG-folder loader does.

    Returns:
        ``[T, 3, image_size, image_size]`` float32, ImageNet-normalised.

    Raises:
        InputError: naming a frame that is corrupt or of a different size.
    """
    images = torch.zeros(len(source), 3, image_size, image_size, dtype=torch.float32)
    frames = source.iter_frames()
    if progress:
        frames = tqdm(frames, total=len(source), desc="reading frames", unit="frame")
    for index, frame in enumerate(frames):
        resized = np.array(Image.fromarray(frame).resize((image_size, image_size))) / 255.0
        images[index] = torch.from_numpy(resized).permute(2, 0, 1)
    images -= torch.tensor(IMAGE_MEAN, dtype=torch.float32)[:, None, None]
    images /= torch.tensor(IMAGE_STD, dtype=torch.float32)[:, None, None]
    return images


class SAM2Predictor(SAM2VideoPredictor):
    """The official SAM 2 video predictor (the unpruned baseline), with four changes:

    - ``init_state`` also reads folders of PNG frames, names that are not plain integers
      (natural sort) and any video file, and checks frames (size, corrupt files) up front;
    - sam2's missing CUDA extension is reported once instead of warned about on every frame;
    - the bf16 memory bank is cast before memory attention (see ``attention.MemoryAttention``),
      and the per-object memory clearing that 1.1.0 calls but lacks is implemented;
    - ``propagate_in_video`` tracks an object only from its first prompted frame on (in
      reverse, from its last one back), instead of on every frame from the start frame.

    Masks and logits are those of ``sam2.sam2_video_predictor.SAM2VideoPredictor``, except
    where sam2 tracks an object before it was prompted (see ``propagate_in_video``).
    """

    model_name: str = "sam2"
    random_weights: bool = False
    config_path: Path | None = None  # the SAM 2 YAML it was built from

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.timer: ComponentTimer | None = None
        if self.fill_hole_area > 0 and not cuda_extension_available():
            # SAM 2 would try, fail, warn and keep the unfilled mask on every frame.
            _report_missing_extension_once(self.fill_hole_area)
            self.fill_hole_area = 0

    @torch.inference_mode()
    def init_state(
        self,
        video_path: str | Path | VideoSource,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> dict:
        """Start an inference session on a video (folder of frames, video file or ``VideoSource``).

        With ``async_loading_frames=True`` SAM 2's own loader reads the frames (JPEG folders
        named by frame number, or MP4 with decord) in the background, as in sam2.
        """
        if async_loading_frames:
            return super().init_state(
                str(video_path), offload_video_to_cpu, offload_state_to_cpu, async_loading_frames
            )
        source = video_path if isinstance(video_path, VideoSource) else VideoSource.open(video_path)
        images = load_frames_tensor(source, self.image_size)
        if not offload_video_to_cpu:
            images = images.to(self.device)
        inference_state = self._new_inference_state(
            images,
            video_height=source.height,
            video_width=source.width,
            offload_video_to_cpu=offload_video_to_cpu,
            offload_state_to_cpu=offload_state_to_cpu,
        )
        inference_state["video_source"] = source
        # As sam2 does: warm up the backbone and cache frame 0's features.
        self._get_image_feature(inference_state, frame_idx=0, batch_size=1)
        return inference_state

    def _new_inference_state(
        self,
        images: torch.Tensor,
        *,
        video_height: int,
        video_width: int,
        offload_video_to_cpu: bool,
        offload_state_to_cpu: bool,
    ) -> dict:
        """The session dict of ``SAM2VideoPredictor.init_state`` (same keys, same meaning)."""
        from collections import OrderedDict

        compute_device = self.device
        storage_device = torch.device("cpu") if offload_state_to_cpu else compute_device
        return {
            "images": images,
            "num_frames": len(images),
            "offload_video_to_cpu": offload_video_to_cpu,
            "offload_state_to_cpu": offload_state_to_cpu,
            "video_height": video_height,
            "video_width": video_width,
            "device": compute_device,
            "storage_device": storage_device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }

    @torch.inference_mode()
    def propagate_in_video(
        self,
        inference_state: dict,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
        *,
        only_from_prompts: bool = False,
    ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """sam2 1.1.0's ``SAM2VideoPredictor.propagate_in_video`` with one change: an object
        takes part in a frame only if it has a conditioning (prompted) frame at or before it
        (at or after it with ``reverse``), or if it was tracked on that frame before.

        sam2 runs every object on every frame from the start frame, so an object first prompted
        on a later frame is "tracked" before it, attending to its own future prompt, and those
        memories then condition its frames after the prompt. Here nothing is run or stored for
        it there (no output, no ``frames_tracked_per_obj`` mark) and its yielded mask logits
        are empty (``NO_OBJ_SCORE``). Objects that take part run exactly as in sam2, including
        its re-tracking of frames an object already has (e.g. in reverse from a frame tracked
        forward, after a correction).

        Args:
            only_from_prompts: keyword-only, not in sam2: also skip objects on frames they were
                tracked on before but have no prompt at or behind in this direction, so a pass
                never re-tracks an object over frames another pass gave it (e.g. tracking each
                object backwards from its own first prompt after a forward pass).

        Yields:
            ``(frame_idx, obj_ids, video_res_masks)`` for every frame in processing order;
            ``video_res_masks`` ``[num_objects, 1, video_H, video_W]``, every object, in
            ``obj_ids`` order.
        """
        self.propagate_in_video_preflight(inference_state)

        obj_ids = inference_state["obj_ids"]
        num_frames = inference_state["num_frames"]
        batch_size = self._get_obj_num(inference_state)

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
            if start_frame_idx > 0:
                processing_order = range(start_frame_idx, end_frame_idx - 1, -1)
            else:
                processing_order = []  # sam2 skips reverse tracking from frame 0
        else:
            end_frame_idx = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            processing_order = range(start_frame_idx, end_frame_idx + 1)

        low_res = self.image_size // 4
        for frame_idx in tqdm(processing_order, desc="propagate in video"):
            pred_masks_per_obj = [None] * batch_size
            for obj_idx in range(batch_size):
                obj_output_dict = inference_state["output_dict_per_obj"][obj_idx]
                cond_frames = obj_output_dict["cond_frame_outputs"]
                prompted = any(t >= frame_idx if reverse else t <= frame_idx for t in cond_frames)
                tracked = frame_idx in inference_state["frames_tracked_per_obj"][obj_idx]
                if not (prompted or (tracked and not only_from_prompts)):
                    # the one change: not prompted yet in this direction, nor tracked here before
                    pred_masks_per_obj[obj_idx] = torch.full(
                        (1, 1, low_res, low_res), NO_OBJ_SCORE, dtype=torch.float32, device=inference_state["device"]
                    )
                    continue
                if frame_idx in cond_frames:
                    current_out = cond_frames[frame_idx]
                    pred_masks = current_out["pred_masks"].to(inference_state["device"], non_blocking=True)
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(inference_state, frame_idx, obj_idx)
                else:
                    current_out, pred_masks = self._run_single_frame_inference(
                        inference_state=inference_state,
                        output_dict=obj_output_dict,
                        frame_idx=frame_idx,
                        batch_size=1,  # sam2 tracks objects one at a time
                        is_init_cond_frame=False,
                        point_inputs=None,
                        mask_inputs=None,
                        reverse=reverse,
                        run_mem_encoder=True,
                    )
                    obj_output_dict["non_cond_frame_outputs"][frame_idx] = current_out
                inference_state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}
                pred_masks_per_obj[obj_idx] = pred_masks

            if len(pred_masks_per_obj) > 1:
                all_pred_masks = torch.cat(pred_masks_per_obj, dim=0)
            else:
                all_pred_masks = pred_masks_per_obj[0]
            _, video_res_masks = self._get_orig_video_res_output(inference_state, all_pred_masks)
            yield frame_idx, obj_ids, video_res_masks

    def _clear_obj_non_cond_mem_around_input(
        self, inference_state: dict, frame_idx: int, obj_idx: int
    ) -> None:
        """Drop one object's non-conditioning memories around a corrected frame.

        sam2 1.1.0 calls this method when ``clear_non_cond_mem_around_input=True`` but only
        defines the all-objects variant ``_clear_non_cond_mem_around_input``.
        """
        stride = self.memory_temporal_stride_for_eval
        non_cond_outputs = inference_state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]
        for t in range(frame_idx - stride * self.num_maskmem, frame_idx + stride * self.num_maskmem + 1):
            non_cond_outputs.pop(t, None)

    def pruning_stats(self, inference_state: dict) -> dict:
        """Per frame and object: tokens, kept tokens and memory-bank bytes; and the totals.

        Returns:
            ``{"tokens_per_frame": N, "frames": {frame_idx: {obj_id: {"kept_tokens", "memory_bank_bytes",
            "conditioning"}}}, "totals": {"frames", "kept_tokens", "tokens", "kept_fraction",
            "memory_bank_bytes"}}``. Frames without a stored memory (not tracked yet) are absent.
        """
        num_tokens = self.sam_image_embedding_size**2
        frames = _frame_stats(inference_state, num_tokens)
        entries = [entry for per_obj in frames.values() for entry in per_obj.values()]
        kept = sum(entry["kept_tokens"] for entry in entries)
        return {
            "tokens_per_frame": num_tokens,
            "frames": dict(sorted(frames.items())),
            "totals": {
                "frames": len(frames),
                "kept_tokens": kept,
                "tokens": num_tokens * len(entries),
                "kept_fraction": kept / (num_tokens * len(entries)) if entries else 0.0,
                "memory_bank_bytes": sum(entry["memory_bank_bytes"] for entry in entries),
            },
        }

    # Component timing for the benchmark: each hook is a plain pass-through without a timer.

    @contextmanager
    def _timed(self, component: str) -> Iterator[None]:
        if self.timer is None:
            yield
        else:
            with self.timer.measure(component):
                yield

    def forward_image(self, img_batch: torch.Tensor) -> dict:
        with self._timed("image_encoder"):
            return super().forward_image(img_batch)

    def _prepare_memory_conditioned_features(self, *args, **kwargs) -> torch.Tensor:
        with self._timed("memory_attention"):
            return super()._prepare_memory_conditioned_features(*args, **kwargs)

    def _forward_sam_heads(self, *args, **kwargs):
        with self._timed("mask_decoder"):
            return super()._forward_sam_heads(*args, **kwargs)

    def _encode_new_memory(self, *args, **kwargs):
        with self._timed("memory_encoder"):
            return super()._encode_new_memory(*args, **kwargs)


def index_dtype(num_tokens: int) -> torch.dtype:
    """The most compact integer dtype that holds token indices 0..num_tokens-1."""
    return torch.int16 if num_tokens <= torch.iinfo(torch.int16).max + 1 else torch.int32


def memory_bank_bytes(out: dict) -> int:
    """Bytes of what memory attention reads back from one frame's stored output: its spatial
    memory features, their token indices (pruned frames) and the object pointer."""
    total = 0
    for key in ("maskmem_features", "keep_idx", "obj_ptr"):
        tensor = out.get(key)
        if tensor is not None:
            total += tensor.numel() * tensor.element_size()
    return total


def _frame_stats(inference_state: dict, num_tokens: int) -> dict:
    frames: dict[int, dict] = {}
    for obj_idx, obj_output_dict in inference_state["output_dict_per_obj"].items():
        obj_id = inference_state["obj_idx_to_id"][obj_idx]
        for storage_key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            for frame_idx, out in obj_output_dict[storage_key].items():
                if out.get("maskmem_features") is None:
                    continue
                keep_idx = out.get("keep_idx")
                frames.setdefault(frame_idx, {})[obj_id] = {
                    "kept_tokens": num_tokens if keep_idx is None else int(keep_idx.shape[-1]),
                    "memory_bank_bytes": memory_bank_bytes(out),
                    "conditioning": storage_key == "cond_frame_outputs",
                }
    return frames


class PrunedSAM2VideoPredictor(SAM2Predictor):
    """SAM 2's video predictor with token pruning between the image encoder and memory attention.

    On every tracked frame a scorer ranks the frame's stride-16 tokens and the top
    ``retention`` fraction (``keep_idx``, per object, ascending grid order) becomes the memory
    attention queries; memory attention attends to each memory frame's stored tokens only, with
    each token's own rotary position; its output is scattered back into the dense grid for the
    mask decoder (dropped positions get ``PruningConfig.fill``); the memory encoder runs dense and
    only the kept tokens are stored, with ``keep_idx`` (compact integer dtype) beside them.

    Frames with user prompts run memory attention dense; their memory is stored dense unless
    ``prune_conditioning_frames`` (then scored on the frame's own mask and prompt). A frame
    without ``keep_idx`` is dense everywhere. Public API and checkpoints: those of SAM 2.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rope_table = RopeTable()
        # kept tokens [B, k] of the frame being tracked, set only for the duration of one
        # _run_single_frame_inference call (sam2's track_step has no slot to pass it through)
        self._active_keep_idx: torch.Tensor | None = None
        self.uncertainty_probe: UncertaintyProbe | None = None
        self.set_pruning(PruningConfig())

    def set_pruning(self, pruning: PruningConfig) -> None:
        """Use another pruning config: builds its scorer (loading the aligner, text encoder and
        router weights it names) and attaches the uncertainty probe if the router needs it.

        Raises:
            InputError: a file the config names is missing or does not fit this model.
        """
        if not isinstance(pruning, PruningConfig):
            raise TypeError(f"pruning must be a PruningConfig, got {type(pruning).__name__}")
        # build everything new first: on an error the predictor keeps its previous config
        if pruning.scorer == "router":
            scorer = build_router_scorer(
                pruning,
                channels=self.hidden_dim,
                model_name=self.model_name,
                image_size=self.image_size,
                random_router=self.random_weights,
                timed=self._timed,
                log=log.warning,
            )
        else:
            scorer = make_scorer(pruning)
        if self.uncertainty_probe is not None:
            self.uncertainty_probe.detach()
            self.uncertainty_probe = None
        if pruning.scorer == "router" and "uncertainty" in scorer.signals:
            self.uncertainty_probe = UncertaintyProbe(
                self.image_encoder.trunk,
                pruning.uncertainty_blocks,
                mode=pruning.uncertainty,
                p=pruning.mc_dropout_p,
                passes=pruning.mc_passes,
                seed=pruning.seed,
                timed=self._timed,
            )
        self.pruning = pruning
        self.scorer = scorer

    def forward_image(self, img_batch: torch.Tensor) -> dict:
        backbone_out = super().forward_image(img_batch)
        if self.uncertainty_probe is not None:
            grid = (self.sam_image_embedding_size, self.sam_image_embedding_size)
            backbone_out["token_uncertainty"] = self.uncertainty_probe.take(grid)  # [B, N]
        return backbone_out

    def set_object_text(self, inference_state: dict, obj_id: int, text: str) -> None:
        """Describe one object of a session for the text signal (overrides ``pruning.text``)."""
        if not text or not text.strip():
            raise ValueError(f"the text of object {obj_id} must not be empty")
        inference_state.setdefault("object_texts", {})[obj_id] = text

    def _object_text(self, inference_state: dict, output_dict: dict) -> str | None:
        """The text of the object whose per-object output dict this is (sam2 passes the dict, not the id)."""
        texts = inference_state.get("object_texts", {})
        for obj_idx, obj_output_dict in inference_state["output_dict_per_obj"].items():
            if obj_output_dict is output_dict:
                return texts.get(inference_state["obj_idx_to_id"][obj_idx], self.pruning.text)
        return self.pruning.text

    # --- choosing the tokens ------------------------------------------------------------

    def _frame_tokens(self, inference_state: dict, frame_idx: int, batch_size: int):
        """(tokens ``[B, N, C]``, grid ``(H, W)``, uncertainty ``[B, N]`` or None) of a frame."""
        _, _, vision_feats, _, feat_sizes = self._get_image_feature(inference_state, frame_idx, batch_size)
        _, backbone_out = inference_state["cached_features"][frame_idx]
        uncertainty = backbone_out.get("token_uncertainty")
        if uncertainty is not None:
            uncertainty = uncertainty.expand(batch_size, -1)
        return vision_feats[-1].transpose(0, 1), tuple(feat_sizes[-1]), uncertainty

    def _score_and_select(self, tokens: torch.Tensor, context: ScoringContext) -> torch.Tensor:
        with self._timed("token_scoring"):
            scores = self.scorer(tokens, context)
            return select_tokens(scores, self.pruning.kept_count(tokens.shape[1]))

    def _select_tracked_frame(
        self, inference_state: dict, output_dict: dict, frame_idx: int, batch_size: int, reverse: bool
    ) -> torch.Tensor | None:
        """Kept tokens ``[B, k]`` of a frame being tracked, or None to run it dense."""
        tokens, grid, uncertainty = self._frame_tokens(inference_state, frame_idx, batch_size)
        prior = None
        if self.scorer.needs_prior:
            neighbour = frame_idx + 1 if reverse else frame_idx - 1
            previous = output_dict["cond_frame_outputs"].get(neighbour)
            if previous is None:
                previous = output_dict["non_cond_frame_outputs"].get(neighbour)
            if previous is None or previous.get("pred_masks") is None:
                return None  # no neighbouring output (started mid-video, memory cleared): dense
            prior = previous["pred_masks"]
        context = ScoringContext(
            frame_idx=frame_idx,
            grid=grid,
            prior_mask=prior,
            uncertainty=uncertainty,
            text=self._object_text(inference_state, output_dict),
        )
        return self._score_and_select(tokens, context)

    def _select_prompted_frame(
        self,
        inference_state: dict,
        output_dict: dict,
        frame_idx: int,
        batch_size: int,
        out: dict,
        point_inputs: dict | None,
    ) -> torch.Tensor:
        """Kept tokens of a prompted frame, scored on its own mask plus its clicks/box."""
        tokens, grid, uncertainty = self._frame_tokens(inference_state, frame_idx, batch_size)
        own_mask = out["pred_masks"].to(tokens.device)
        prompted = prompt_mask(
            point_inputs["point_coords"] if point_inputs else None,
            point_inputs["point_labels"] if point_inputs else None,
            size=tuple(own_mask.shape[-2:]),
            image_size=self.image_size,
        )
        prior = own_mask if prompted is None else torch.where(prompted > 0, own_mask.abs() + 1, own_mask)
        context = ScoringContext(
            frame_idx=frame_idx,
            grid=grid,
            prior_mask=prior,
            uncertainty=uncertainty,
            text=self._object_text(inference_state, output_dict),
        )
        return self._score_and_select(tokens, context)

    @staticmethod
    def _store_sparse_memory(out: dict) -> None:
        """Keep a frame's dense memory features only at its ``keep_idx``: ``[B, C, H, W]`` -> ``[B, C, k]``."""
        features, keep_idx = out.get("maskmem_features"), out.get("keep_idx")
        if features is None or keep_idx is None or features.dim() != 4:
            return
        flat = features.flatten(2)
        index = keep_idx.to(flat.device).long()[:, None, :].expand(-1, flat.shape[1], -1)
        out["maskmem_features"] = torch.gather(flat, 2, index)

    # --- sam2 hooks -----------------------------------------------------------------------

    def _run_single_frame_inference(
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
        has_prompt = point_inputs is not None or mask_inputs is not None
        keep_idx = None
        if not has_prompt and not is_init_cond_frame:
            keep_idx = self._select_tracked_frame(inference_state, output_dict, frame_idx, batch_size, reverse)
        self._active_keep_idx = keep_idx
        try:
            out, pred_masks = super()._run_single_frame_inference(
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
        finally:
            self._active_keep_idx = None
        if keep_idx is not None:
            num_tokens = self.sam_image_embedding_size**2
            out["keep_idx"] = keep_idx.to(device=inference_state["storage_device"], dtype=index_dtype(num_tokens))
            self._store_sparse_memory(out)
        return out, pred_masks

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: dict) -> None:
        """sam2 encodes the memory of prompted frames here, dense. With
        ``prune_conditioning_frames`` their tokens are chosen now (every object's text is known
        by now, and the prior is the frame's own mask) and only those are kept."""
        super().propagate_in_video_preflight(inference_state)
        num_tokens = self.sam_image_embedding_size**2
        for obj_idx, obj_output_dict in inference_state["output_dict_per_obj"].items():
            points = inference_state["point_inputs_per_obj"][obj_idx]
            prompted = set(points) | set(inference_state["mask_inputs_per_obj"][obj_idx])
            for outputs in obj_output_dict.values():
                for frame_idx, out in outputs.items():
                    dense = out.get("maskmem_features") is not None and out["maskmem_features"].dim() == 4
                    if self.pruning.prune_conditioning_frames and frame_idx in prompted and dense and "keep_idx" not in out:
                        keep_idx = self._select_prompted_frame(
                            inference_state, obj_output_dict, frame_idx, 1, out, points.get(frame_idx)
                        )
                        out["keep_idx"] = keep_idx.to(inference_state["storage_device"], dtype=index_dtype(num_tokens))
                    self._store_sparse_memory(out)

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
        """Memory attention for the kept queries against each memory frame's kept tokens.

        Same memory selection as sam2 1.1.0's ``SAM2Base._prepare_memory_conditioned_features``
        (conditioning frames, the last ``num_maskmem - 1`` frames with stride, object pointers),
        but sparse: see the class docstring.

        Returns:
            ``[B, C, H, W]`` memory-conditioned features of the whole grid.
        """
        if is_init_cond_frame or self.num_maskmem == 0:
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
        with self._timed("memory_attention"):
            return self._sparse_memory_conditioned_features(
                frame_idx,
                current_vision_feats[-1],
                current_vision_pos_embeds[-1],
                tuple(feat_sizes[-1]),
                output_dict,
                num_frames,
                track_in_reverse,
            )

    def _sparse_memory_conditioned_features(
        self,
        frame_idx: int,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        grid: tuple[int, int],
        output_dict: dict,
        num_frames: int,
        track_in_reverse: bool,
    ) -> torch.Tensor:
        """Args: curr, curr_pos ``[HW, B, C]``. Returns ``[B, C, H, W]``."""
        batch, channels = curr.shape[1], self.hidden_dim
        height, width = grid
        device = curr.device
        all_cells = torch.arange(height * width, device=device).expand(batch, -1)

        selected_cond, unselected_cond = select_closest_cond_frames(
            frame_idx, output_dict["cond_frame_outputs"], self.max_cond_frames_in_attn
        )
        memory, memory_pos, memory_cells = [], [], []
        for t_pos, previous in self._memory_frames(frame_idx, output_dict, selected_cond, unselected_cond, track_in_reverse):
            features = previous["maskmem_features"].to(device, non_blocking=True).flatten(2)  # [B, C_mem, n]
            position = previous["maskmem_pos_enc"][-1].to(device).flatten(2)  # [B, C_mem, HW], shared
            keep_idx = previous.get("keep_idx")
            cells = all_cells if keep_idx is None else keep_idx.to(device).long()
            if keep_idx is not None:
                position = torch.gather(position, 2, cells[:, None, :].expand(-1, position.shape[1], -1))
            memory.append(features.permute(2, 0, 1).to(curr.dtype))
            memory_pos.append(position.permute(2, 0, 1) + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])
            memory_cells.append(cells)

        num_pointer_tokens = 0
        pointers = self._object_pointers(
            frame_idx, output_dict, selected_cond, unselected_cond, num_frames, track_in_reverse, batch, device
        )
        if pointers is not None:
            memory.append(pointers[0])
            memory_pos.append(pointers[1])
            num_pointer_tokens = pointers[0].shape[0]

        keep_idx = self._active_keep_idx
        query_cells = all_cells if keep_idx is None else keep_idx.to(device).long()
        queries = curr if keep_idx is None else gather_tokens(curr, query_cells)
        query_pos = curr_pos if keep_idx is None else gather_tokens(curr_pos, query_cells)
        attended = sparse_memory_attention(
            self.memory_attention,
            queries,
            query_pos,
            torch.cat(memory, dim=0),
            torch.cat(memory_pos, dim=0),
            query_cells=query_cells,
            memory_cells=torch.cat(memory_cells, dim=1),
            grid=grid,
            rope=self.rope_table,
            num_obj_ptr_tokens=num_pointer_tokens,
        )
        if keep_idx is not None:
            fill = dropped_token_fill(self.memory_attention, curr, curr_pos) if self.pruning.fill == "norm" else curr
            attended = scatter_tokens(fill, query_cells, attended)
        return attended.permute(1, 2, 0).view(batch, channels, height, width)

    def _memory_frames(
        self, frame_idx: int, output_dict: dict, selected_cond: dict, unselected_cond: dict, track_in_reverse: bool
    ) -> list[tuple[int, dict]]:
        """(temporal position, stored output) of each spatial memory, in sam2 1.1.0's order:
        the selected conditioning frames (t_pos 0), then the last ``num_maskmem - 1`` frames
        before this one (every ``memory_temporal_stride_for_eval``-th beyond the previous)."""
        frames = [(0, out) for out in selected_cond.values()]
        stride = 1 if self.training else self.memory_temporal_stride_for_eval
        direction = -1 if track_in_reverse else 1
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos  # frames before the current one
            if t_rel == 1:
                previous_idx = frame_idx - direction
            elif not track_in_reverse:
                previous_idx = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                previous_idx = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            out = output_dict["non_cond_frame_outputs"].get(previous_idx)
            if out is None:
                out = unselected_cond.get(previous_idx)
            if out is not None:
                frames.append((t_pos, out))
        return frames

    def _object_pointers(
        self,
        frame_idx: int,
        output_dict: dict,
        selected_cond: dict,
        unselected_cond: dict,
        num_frames: int,
        track_in_reverse: bool,
        batch: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Object-pointer memory tokens and their temporal encodings (``[P, B, C_mem]`` each),
        as sam2 1.1.0 builds them; None when there is none. Pointers are never pruned."""
        if not self.use_obj_ptrs_in_encoder:
            return None
        channels = self.hidden_dim
        max_pointers = min(num_frames, self.max_obj_ptrs_in_encoder)
        if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
            pointer_cond = {
                t: out
                for t, out in selected_cond.items()
                if (t >= frame_idx if track_in_reverse else t <= frame_idx)
            }
        else:
            pointer_cond = selected_cond
        sign = -1 if track_in_reverse else 1
        positions_and_pointers = [
            ((frame_idx - t) * sign if self.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), out["obj_ptr"])
            for t, out in pointer_cond.items()
        ]
        for t_diff in range(1, max_pointers):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            out = output_dict["non_cond_frame_outputs"].get(t, unselected_cond.get(t))
            if out is not None:
                positions_and_pointers.append((t_diff, out["obj_ptr"]))
        if not positions_and_pointers:
            return None
        positions, pointer_list = zip(*positions_and_pointers)
        pointers = torch.stack(pointer_list, dim=0)
        if self.add_tpos_enc_to_obj_ptrs:
            tpos_dim = channels if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            encoded = torch.tensor(positions).to(device=device, non_blocking=True)
            encoded = get_1d_sine_pe(encoded / (max_pointers - 1), dim=tpos_dim)
            pointer_pos = self.obj_ptr_tpos_proj(encoded).unsqueeze(1).expand(-1, batch, self.mem_dim)
        else:
            pointer_pos = pointers.new_zeros(len(positions), batch, self.mem_dim)
        if self.mem_dim < channels:
            # a pointer of C channels becomes C // mem_dim tokens
            pointers = pointers.reshape(-1, batch, channels // self.mem_dim, self.mem_dim)
            pointers = pointers.permute(0, 2, 1, 3).flatten(0, 1)
            pointer_pos = pointer_pos.repeat_interleave(channels // self.mem_dim, dim=0)
        return pointers, pointer_pos
