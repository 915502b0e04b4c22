"""The baseline: sam2's own video predictor, extended with what sam2prune needs of every
predictor (frames read on demand from any source, objects tracked from their first prompt,
bounded memory over long videos, honest memory figures)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from sam2prune.data.frames import FrameSource, load_frames_tensor
from sam2prune.data.video import VideoSource
from sam2prune.predictor.bank import (
    FrameReads,
    SparseMemoryBank,
    TrackingRun,
    frame_reads,
    reads_after,
)
from sam2prune.predictor.session import SESSION_KEY, TrackingSession, tracking_session
from sam2prune.sam2_copies import propagate_objects

log = logging.getLogger("sam2prune")

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


@contextmanager
def _frames_from(load: Callable[..., tuple]) -> Iterator[None]:
    """Make ``SAM2VideoPredictor.init_state`` read its frames with ``load`` (called with
    ``load_video_frames``' keyword arguments) instead of sam2's JPEG-folder/MP4 loader."""
    import sam2.sam2_video_predictor as official

    original = official.load_video_frames
    official.load_video_frames = load
    try:
        yield
    finally:
        official.load_video_frames = original


class BatchedOutputs(dict):
    """Several objects' memories as one batched per-object output dict: the shape sam2's
    ``track_step`` takes (``cond_frame_outputs``/``non_cond_frame_outputs``, each frame's
    tensors with batch B = objects), built for one frame's step from objects whose memories
    have the same layout.

    Attributes:
        obj_ids: the objects, in batch order.
        dicts: their own output dicts (or the scratch copies being tracked again), in batch order.
        keep_idx: ``[B, k]`` tokens the pruned predictor kept for the step, or None.
    """

    def __init__(self, obj_ids: list[int], dicts: list[dict], outputs: dict[str, Mapping[int, dict]]) -> None:
        super().__init__(outputs)
        self.obj_ids = obj_ids
        self.dicts = dicts
        self.keep_idx: torch.Tensor | None = None


class MergedFrames(Mapping[int, dict]):
    """One storage dict (``cond_frame_outputs`` or ``non_cond_frame_outputs``) of several objects
    as batched outputs, each frame's merged when it is first read: sam2's dense memory attention
    reads them, the pruned predictor's steps read the objects' banks instead (nothing merged)."""

    def __init__(self, per_object: list[dict[int, dict]], frames: list[int]) -> None:
        self.per_object = per_object
        self.frames = frames
        self.merged: dict[int, dict] = {}

    def __getitem__(self, frame_idx: int) -> dict:
        if frame_idx not in self.frames:
            raise KeyError(frame_idx)
        if frame_idx not in self.merged:
            self.merged[frame_idx] = _merge_outputs([outputs[frame_idx] for outputs in self.per_object])
        return self.merged[frame_idx]

    def __contains__(self, frame_idx: object) -> bool:
        return frame_idx in self.frames  # without merging

    def __iter__(self) -> Iterator[int]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)


def _merge_outputs(outs: list[dict]) -> dict:
    """One frame's stored outputs of several objects as one output of batch B (what memory
    attention reads: features, their position encoding, the object pointers). A part that some
    object does not hold is None (bounded memory dropped it: the step does not read it)."""

    def every(key: str) -> bool:
        return all(out.get(key) is not None for out in outs)

    first = outs[0]
    return {
        "maskmem_features": torch.cat([out["maskmem_features"] for out in outs]) if every("maskmem_features") else None,
        # one shared constant (sam2's _get_maskmem_pos_enc): a view at batch B
        "maskmem_pos_enc": [x.expand(len(outs), *x.shape[1:]) for x in first["maskmem_pos_enc"]]
        if every("maskmem_pos_enc")
        else None,
        "obj_ptr": torch.cat([out["obj_ptr"] for out in outs]) if every("obj_ptr") else None,
    }


def _split_output(out: dict, row: int, *, copy: bool = False) -> dict:
    """Row ``row`` of a batched step's output, as the per-object step stores it (views of the
    batch, or with ``copy`` tensors of their own; the memory's position encoding stays a view
    of sam2's one shared constant)."""

    def part(key: str, x: torch.Tensor) -> torch.Tensor:
        return x[row : row + 1].clone() if copy and key != "maskmem_pos_enc" else x[row : row + 1]

    return {
        key: (None if value is None else [part(key, x) for x in value] if isinstance(value, list) else part(key, value))
        for key, value in out.items()
    }


def init_state_from(
    predictor: SAM2VideoPredictor,
    source: VideoSource,
    *,
    offload_video_to_cpu: bool = False,
    offload_state_to_cpu: bool = False,
    bounded_memory: bool = True,
) -> dict:
    """sam2's ``SAM2VideoPredictor.init_state`` for any predictor (sam2's own classes too),
    reading the frames of ``source`` through ``VideoSource`` instead of sam2's loader, so that
    every predictor of a comparison gets the same frames tensor (the whole video, read up front:
    decoding is not timed). sam2prune's predictors keep bounded memory unless told not to."""

    def load(*, image_size: int, offload_video_to_cpu: bool, compute_device: torch.device, **_: object) -> tuple:
        images = load_frames_tensor(source, image_size)
        if not offload_video_to_cpu:
            images = images.to(compute_device)
        return images, source.height, source.width

    with _frames_from(load):
        state = SAM2VideoPredictor.init_state(
            predictor, str(source.path), offload_video_to_cpu, offload_state_to_cpu, False
        )
    if isinstance(predictor, SAM2Predictor):
        predictor.session(state).bounded_memory = bounded_memory
    return state


class SAM2Predictor(SAM2VideoPredictor):
    """The official SAM 2 video predictor (the unpruned baseline), with these changes:

    - ``init_state`` also reads folders of PNG frames, names that are not plain integers
      (natural sort) and any video file, and checks frames (size, corrupt files) up front;
      frames are decoded when tracking reaches them (``FrameSource``), not all at once;
    - with ``bounded_memory`` (the default) each object's state keeps only what later frames
      can read (``SparseMemoryBank``), so memory does not grow with the video; the logits are
      the same bit for bit;
    - sam2's missing CUDA extension is reported once instead of warned about on every frame;
    - the bf16 memory bank is cast before memory attention (``attention.MemoryAttention``), and
      the per-object memory clearing that 1.1.0 calls but lacks is implemented;
    - ``propagate_in_video`` tracks an object only from its first prompted frame on (in
      reverse, from its last one back), instead of on every frame from the start frame;
    - objects whose memories have the same layout are tracked in one batched step
      (``batch_objects``, the default) instead of one step each;
    - ``pruning_stats`` reports what each stored frame holds, and the peak.

    With ``batch_objects = False``, masks and logits are those of
    ``sam2.sam2_video_predictor.SAM2VideoPredictor`` bit for bit, except where sam2 tracks an
    object before it was prompted (see ``propagate_in_video``). The batched step (the default)
    rounds differently: its logits agree with sam2's to float rounding (within 1e-5, tested;
    e.g. 7e-7 after 30 frames of three objects), not always bit for bit, so a mask pixel whose
    logit is that close to 0 may flip.
    Per-video state (memory banks, bounded-memory bookkeeping) lives in a ``TrackingSession``
    on the inference state.
    """

    model_name: str = "sam2"
    random_weights: bool = False
    config_path: Path | None = None  # the SAM 2 YAML it was built from
    # objects whose memories have the same layout are tracked in one batched step (False: one
    # step per object, as sam2 1.1.0; the results agree to float rounding, not bit for bit).
    # Never with the model's non_overlap_masks_for_mem_enc: sam2 applies it across the batch of
    # its memory encoder, one object in 1.1.0's video predictor; batched, it would act across objects
    batch_objects: bool = True
    # bounded memory: an object's tracking run is cut every this many frames, so that recomputing
    # a dropped frame (a click, a reverse pass) re-tracks at most that many; each run keeps what
    # its first frame reads (a few frames' memories), so the state grows by that every so many
    # frames. None: a run lasts as long as tracking goes on (recomputation re-tracks from its start)
    replay_checkpoint_every: int | None = None
    # which pruning config tracking runs under: the pruned predictor's set_pruning counts them.
    # Bounded memory tracks dropped frames again only under the config they were tracked under
    pruning_generation: int = 0
    fill_hole_area: int  # set by sam2's SAM2Base.__init__

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.fill_hole_area > 0 and not cuda_extension_available():
            # SAM 2 would try, fail, warn and keep the unfilled mask on every frame.
            _report_missing_extension_once(self.fill_hole_area)
            self.fill_hole_area = 0

    @property
    def num_tokens(self) -> int:
        """N: tokens per frame of the memory grid (64 x 64 at 1024 px)."""
        return self.sam_image_embedding_size**2

    @property
    def reads_neighbour_mask(self) -> bool:
        """Whether tracking a frame reads the previous frame's mask logits (a token scorer's
        prior); sam2 itself does not."""
        return False

    def session(self, inference_state: dict) -> TrackingSession:
        return tracking_session(inference_state, self.num_tokens)

    @torch.inference_mode()
    def init_state(
        self,
        video_path: str | Path | VideoSource,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
        *,
        bounded_memory: bool = True,
    ) -> dict:
        """Start an inference session on a video (folder of frames, video file or ``VideoSource``):
        sam2's ``init_state``, reading the frames through a ``FrameSource``, which decodes each
        frame when tracking reaches it (``inference_state["images"]``; with
        ``offload_video_to_cpu`` the few frames it holds stay on the CPU).

        With ``async_loading_frames=True`` SAM 2's own loader reads the frames (JPEG folders
        named by frame number, or MP4 with decord) in the background, as in sam2.

        Args:
            bounded_memory: keyword-only, not in sam2: as tracking moves on, drop from each
                object's state what no later frame in that direction can read (old memories,
                pointers and masks), so memory stays bounded over long videos; what a click or
                a pass in the other direction needs back is recomputed exactly. False keeps
                every frame's outputs, as sam2 does. The logits are the same either way.
        """
        if async_loading_frames:
            state = super().init_state(str(video_path), offload_video_to_cpu, offload_state_to_cpu, True)
        else:
            source = video_path if isinstance(video_path, VideoSource) else VideoSource.open(video_path)

            def load(
                *, image_size: int, offload_video_to_cpu: bool, compute_device: torch.device, **_: object
            ) -> tuple:
                device = torch.device("cpu") if offload_video_to_cpu else compute_device
                return FrameSource(source, image_size, device=device), source.height, source.width

            with _frames_from(load):
                state = super().init_state(str(source.path), offload_video_to_cpu, offload_state_to_cpu, False)
        self.session(state).bounded_memory = bounded_memory
        return state

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
        """sam2's ``propagate_in_video`` with one change: an object takes part in a frame only if
        it has a conditioning (prompted) frame at or before it (at or after it with ``reverse``),
        or if it was tracked on that frame before.

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

        def takes_part(obj_idx: int, frame_idx: int) -> bool:
            conditioning = inference_state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"]
            if any(t >= frame_idx if reverse else t <= frame_idx for t in conditioning):
                return True
            return not only_from_prompts and frame_idx in inference_state["frames_tracked_per_obj"][obj_idx]

        def after_frame(frame_idx: int, outputs: dict[int, tuple[dict, dict | None]], last: bool) -> None:
            self._after_tracked_frame(inference_state, frame_idx, outputs, reverse=reverse, pass_ends=last)

        yield from propagate_objects(
            self,
            inference_state,
            start_frame_idx,
            max_frame_num_to_track,
            reverse,
            takes_part=takes_part,
            after_frame=after_frame,
        )

    def _memory_layout(self, inference_state: dict, output_dict: dict, frame_idx: int, reverse: bool) -> tuple:
        """What an object's step on ``frame_idx`` reads, by shape: every conditioning frame, and
        the non-conditioning frames it reads (``frame_reads``: sam2's own selection) with the
        shape of the features and whether a pointer is there where they are read. Objects with
        equal layouts select the same frames and positions (sam2_copies.select_memory_frames,
        object_pointer_tokens), so their memories stack into one batch. Only what is read
        counts: bounded memory drops the rest, and the batching (and so the rounding) must not
        depend on it."""
        reads = frame_reads(
            self, frame_idx, reverse=reverse, num_frames=inference_state["num_frames"], neighbour_mask=False
        )
        non_cond = output_dict["non_cond_frame_outputs"]

        def shape(out: dict) -> tuple[tuple[int, ...] | None, bool]:
            features = out.get("maskmem_features")
            return (None if features is None else tuple(features.shape[1:]), out.get("obj_ptr") is not None)

        def read_shape(t: int, out: dict) -> tuple[tuple[int, ...] | None, bool]:
            features, pointer = shape(out)
            return (features if t in reads.spatial else None, pointer and t in reads.pointers)

        return (
            tuple((t, shape(out)) for t, out in sorted(output_dict["cond_frame_outputs"].items())),
            tuple((t, read_shape(t, non_cond[t])) for t in sorted(reads.spatial | reads.pointers) if t in non_cond),
        )

    def _batch_key(self, inference_state: dict, obj_idx: int, frame_idx: int, reverse: bool) -> tuple:
        """Objects with equal keys on a frame are tracked in one batched step."""
        output_dict = inference_state["output_dict_per_obj"][obj_idx]
        return self._memory_layout(inference_state, output_dict, frame_idx, reverse)

    def _track_objects(
        self, inference_state: dict, frame_idx: int, obj_indices: list[int], *, reverse: bool
    ) -> dict[int, tuple[dict, torch.Tensor]]:
        """Track objects on a frame without prompts there: one batched step per group of objects
        whose memories share a layout (``batch_objects``, unless the model's
        ``non_overlap_masks_for_mem_enc``), else sam2's one step per object.

        Returns:
            ``{obj_idx: (output to store, pred_masks [1, 1, h, w] on the compute device)}``.
        """
        for obj_idx in obj_indices:  # bounded memory: what each object reads is there first
            self._prepare_frame(
                inference_state,
                inference_state["output_dict_per_obj"][obj_idx],
                frame_idx,
                reverse=reverse,
                tracking=True,
                reads=True,
            )
        groups: dict[tuple, list[int]] = {}
        batched = self.batch_objects and not self.non_overlap_masks_for_mem_enc  # see batch_objects
        for obj_idx in obj_indices:
            key = self._batch_key(inference_state, obj_idx, frame_idx, reverse) if batched else (obj_idx,)
            groups.setdefault(key, []).append(obj_idx)
        session = self.session(inference_state)
        # bounded memory: the run each object is tracked in (its bank's), and its batch, to track it again as it was
        runs: dict[int, tuple[SparseMemoryBank, TrackingRun]] = {}
        for members in groups.values():
            for row, obj_idx in enumerate(members):
                bank = session.bank(inference_state, inference_state["obj_idx_to_id"][obj_idx])
                if bank.active_run is not None:
                    bank.active_run.note_batch(frame_idx, len(members), row)
                    runs[obj_idx] = (bank, bank.active_run)
        results = {}
        for members in groups.values():
            if len(members) == 1:
                obj_idx = members[0]
                results[obj_idx] = self._infer_frame(
                    inference_state=inference_state,
                    output_dict=inference_state["output_dict_per_obj"][obj_idx],
                    frame_idx=frame_idx,
                    batch_size=1,
                    is_init_cond_frame=False,
                    point_inputs=None,
                    mask_inputs=None,
                    reverse=reverse,
                    run_mem_encoder=True,
                )
                continue
            view = self._batched_view(
                inference_state,
                [inference_state["output_dict_per_obj"][obj_idx] for obj_idx in members],
                [inference_state["obj_idx_to_id"][obj_idx] for obj_idx in members],
                frame_idx,
                reverse,
            )
            out, pred_masks = self._infer_frame(
                inference_state=inference_state,
                output_dict=view,
                frame_idx=frame_idx,
                batch_size=len(members),
                is_init_cond_frame=False,
                point_inputs=None,
                mask_inputs=None,
                reverse=reverse,
                run_mem_encoder=True,
            )
            for row, obj_idx in enumerate(members):
                row_out = _split_output(out, row)
                self._store_batched_row(inference_state, view, row, frame_idx, row_out)
                results[obj_idx] = (row_out, pred_masks[row : row + 1])
        for obj_idx, (bank, run) in runs.items():
            bank.note_tracked(results[obj_idx][0], run)
        return results

    def _batched_view(
        self, inference_state: dict, dicts: list[dict], obj_ids: list[int], frame_idx: int, reverse: bool
    ) -> BatchedOutputs:
        """The memories of objects with one layout (their output dicts), stacked into one
        batched output dict."""
        cond_frames, non_cond_frames = self._memory_layout(inference_state, dicts[0], frame_idx, reverse)
        outputs: dict[str, Mapping[int, dict]] = {
            "cond_frame_outputs": MergedFrames([d["cond_frame_outputs"] for d in dicts], [t for t, _ in cond_frames]),
            "non_cond_frame_outputs": MergedFrames(
                [d["non_cond_frame_outputs"] for d in dicts], [t for t, _ in non_cond_frames]
            ),
        }
        return BatchedOutputs(obj_ids, dicts, outputs)

    def _store_batched_row(
        self, inference_state: dict, view: BatchedOutputs, row: int, frame_idx: int, out: dict
    ) -> None:
        """Hook after a batched step, per object: nothing to add for the unpruned predictor."""

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: dict) -> None:
        """sam2's, which merges the outputs of new prompts into the objects' memories: an object
        that got one starts a new tracking run (bounded memory) and the bytes held are counted."""
        session = self.session(inference_state)
        for obj_idx, temp in inference_state["temp_output_dict_per_obj"].items():
            if temp["cond_frame_outputs"] or temp["non_cond_frame_outputs"]:
                # before sam2 merges: it may merge some objects' prompts and then refuse the pass
                session.bank(inference_state, inference_state["obj_idx_to_id"][obj_idx]).end_run()
        try:
            super().propagate_in_video_preflight(inference_state)
        finally:
            for obj_id in inference_state["obj_idx_to_id"].values():
                session.bank(inference_state, obj_id).recount()
            session.note_peak()

    @torch.inference_mode()
    def clear_all_prompts_in_frame(
        self, inference_state: dict, frame_idx: int, obj_id: int, need_output: bool = True
    ) -> tuple[int, list, torch.Tensor] | None:
        """sam2's; where the frame was the object's conditioning frame (sam2 keeps its output as a
        tracked one), the object's tracking run ends: the frames tracked after attend to it as a
        tracked frame, those before as a prompted one, so no replay covers both."""
        obj_idx = inference_state["obj_id_to_idx"].get(obj_id)
        if obj_idx is not None and frame_idx in inference_state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"]:
            self.session(inference_state).bank(inference_state, obj_id).end_run()
        return super().clear_all_prompts_in_frame(inference_state, frame_idx, obj_id, need_output=need_output)

    @torch.inference_mode()
    def remove_object(
        self, inference_state: dict, obj_id: int, strict: bool = False, need_output: bool = True
    ) -> tuple[list[int], list]:
        """sam2's, and the object's memory bank and text go with it (what it held is freed)."""
        result = super().remove_object(inference_state, obj_id, strict=strict, need_output=need_output)
        self.session(inference_state).forget_object(obj_id)
        return result

    @torch.inference_mode()
    def reset_state(self, inference_state: dict) -> None:
        bounded = self.session(inference_state).bounded_memory
        super().reset_state(inference_state)
        inference_state[SESSION_KEY] = TrackingSession(self.num_tokens, bounded_memory=bounded)

    def keep_masks_below(self, inference_state: dict, frame_idx: int) -> None:
        """With bounded memory, keep the mask logits (``pred_masks``) of every frame below
        ``frame_idx`` that an object was tracked on, for a caller that reads them back after
        tracking went on (``segment.stored_frame_logits``); lower it as they are read. 0: none."""
        self.session(inference_state).masks_kept_below = frame_idx

    # --- bounded memory -------------------------------------------------------------------------

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
        """sam2's, after making sure (bounded memory) that what the frame reads is there (a mask
        prompt that sam2 hands back as the output reads no memory)."""
        tracking = point_inputs is None and mask_inputs is None and run_mem_encoder
        mask_as_output = mask_inputs is not None and self.use_mask_input_as_output_without_sam
        self._prepare_frame(
            inference_state,
            output_dict,
            frame_idx,
            reverse=reverse,
            tracking=tracking,
            reads=not is_init_cond_frame and not mask_as_output,
        )
        return self._infer_frame(
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
        """One frame of one object: sam2's ``_run_single_frame_inference`` (the pruned predictor
        chooses tokens around it)."""
        return super()._run_single_frame_inference(
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

    def tracking_text(self, session: TrackingSession, obj_id: int) -> str | None:
        """The object's text as tracking reads it (None: tracking reads no text; sam2 reads none)."""
        return None

    def _prepare_frame(
        self, inference_state: dict, output_dict: dict, frame_idx: int, *, reverse: bool, tracking: bool, reads: bool
    ) -> None:
        """Before a frame of one object runs: recompute what bounded memory dropped and the frame
        reads (a click, or tracking that does not continue the last run); and when tracking,
        continue the object's run or start one that keeps what its frames read from before it."""
        session = self.session(inference_state)
        if not session.bounded_memory or session.replaying or not reads:
            return
        obj_id = session.object_id(inference_state, output_dict)
        bank = session.bank(inference_state, obj_id)
        num_frames = inference_state["num_frames"]
        neighbour_mask = tracking and self.reads_neighbour_mask
        run, every, text = bank.active_run, self.replay_checkpoint_every, self.tracking_text(session, obj_id)
        generation = self.pruning_generation
        continues = run is not None and bank.continues(
            run, frame_idx, reverse=reverse, text=text, pruning_generation=generation
        )
        if continues and run is not None and every is not None and abs(frame_idx - run.start) >= every:
            continues = False  # a checkpoint: a new run from here
        if tracking and not continues:
            before = frame_idx + 1 if reverse else frame_idx - 1
            needed = reads_after(self, before, reverse=reverse, num_frames=num_frames, neighbour_mask=neighbour_mask)
        else:
            needed = frame_reads(self, frame_idx, reverse=reverse, num_frames=num_frames, neighbour_mask=neighbour_mask)
        self._recompute(inference_state, obj_id, bank, needed, frame_idx)
        if tracking and not continues:
            bank.begin_run(frame_idx, reverse=reverse, inputs=needed, text=text, pruning_generation=generation)

    def _after_tracked_frame(
        self,
        inference_state: dict,
        frame_idx: int,
        outputs: dict[int, tuple[dict, dict | None]],
        *,
        reverse: bool,
        pass_ends: bool = False,
    ) -> None:
        """Once every object has its output on a tracked frame (``outputs``: by object id, its
        per-object output dict and its output there, or None on its conditioning frame): the peak
        bytes are noted (the frame's outputs held with everything before), then with bounded
        memory each bank drops what no later frame in this direction reads. Where the pass ends
        with this frame (before the end of the video), what the frame itself read stays too, so
        that a next pass that starts on it (passes in chunks, each from the last frame of the one
        before, as sam2 re-tracks its start frame) does not track the whole pass again to get it
        back. Objects removed since the frame was tracked (also by ``reset_state``, and when an
        object of that id was added again) are left out: their outputs are gone with them."""
        session = self.session(inference_state)
        banks = []
        for obj_id, (output_dict, out) in outputs.items():
            obj_idx = inference_state["obj_id_to_idx"].get(obj_id)
            if obj_idx is None or inference_state["output_dict_per_obj"].get(obj_idx) is not output_dict:
                continue  # removed since: its outputs went with it (an object of that id now is another)
            bank = session.bank(inference_state, obj_id)
            bank.end_frame(frame_idx, out, reverse=reverse)
            banks.append(bank)
        session.note_peak()
        if session.bounded_memory:
            num_frames, step = inference_state["num_frames"], -1 if reverse else 1
            neighbour_mask = self.reads_neighbour_mask
            keep = reads_after(self, frame_idx, reverse=reverse, num_frames=num_frames, neighbour_mask=neighbour_mask)
            if pass_ends and 0 <= frame_idx + step < num_frames:
                before = frame_idx - step
                keep |= reads_after(self, before, reverse=reverse, num_frames=num_frames, neighbour_mask=neighbour_mask)
            for bank in banks:
                bank.evict(keep, masks_below=session.masks_kept_below)

    def _recompute(
        self, inference_state: dict, obj_id: int, bank: SparseMemoryBank, needed: FrameReads, frame_idx: int
    ) -> None:
        """Put back the outputs among ``needed`` (what ``frame_idx`` reads) that bounded memory
        dropped, by tracking the runs that produced them again from their start, in a scratch
        copy of the memories, with what they attended to then: the prompted frames' outputs and
        the object's text, though either may have changed since (sam2 keeps the outputs made
        with them, and reads them).

        Raises:
            RuntimeError: some of them were tracked under a pruning config replaced since
                (``set_pruning``): tracked again they would not be what unbounded memory holds.
        """
        session = self.session(inference_state)
        num_frames = inference_state["num_frames"]
        missing = bank.missing(needed)
        replaced = sorted(
            t for run, frames in missing.items() if run.pruning_generation != self.pruning_generation for t in frames
        )
        if replaced:
            which = f"frame {replaced[0]}" if len(replaced) == 1 else f"frames {replaced[0]}-{replaced[-1]}"
            raise RuntimeError(
                f"frame {frame_idx} of object {obj_id} reads {which}, which bounded memory dropped; tracked under "
                "a pruning config replaced since by set_pruning, they cannot be tracked again as they were. Change "
                "the pruning config between sessions: call reset_state (or init_state) after set_pruning, or keep "
                "every frame with init_state(..., bounded_memory=False)"
            )
        for run, frames in missing.items():
            log.debug(
                "frame %d of object %d reads frames %d-%d, which bounded memory dropped: tracking them again",
                frame_idx,
                obj_id,
                min(frames),
                max(frames),
            )
            scratch, scratch_bank = bank.replay_scratch(run)
            restored = {}
            with session.replay(scratch, scratch_bank, obj_id, text=run.text):
                for t in run.frames_to(min(frames) if run.reverse else max(frames)):
                    if t in scratch["cond_frame_outputs"]:
                        continue
                    out = self._track_again(inference_state, scratch, obj_id, t, run)
                    scratch["non_cond_frame_outputs"][t] = out
                    if t in frames:
                        restored[t] = (out, scratch_bank.keep_idx_for(out))
                    keep = reads_after(
                        self, t, reverse=run.reverse, num_frames=num_frames, neighbour_mask=self.reads_neighbour_mask
                    ).frames
                    for dropped in [f for f in scratch["non_cond_frame_outputs"] if f not in keep]:
                        del scratch["non_cond_frame_outputs"][dropped]
                        scratch_bank.forget(dropped)
            for t, (out, keep_idx) in restored.items():
                bank.install(t, out, keep_idx, run)

    def _track_again(self, inference_state: dict, scratch: dict, obj_id: int, frame_idx: int, run: TrackingRun) -> dict:
        """The output of tracking ``frame_idx`` again in ``scratch`` (a replay of ``run``), to the
        bits it had: where the object was one row of a batched step, it is that row of a step of
        the same batch size, each row holding this object's memories (each row of a step
        depends on its own inputs only; its rounding depends on the batch size)."""
        size, row = run.batch_at(frame_idx)
        if size == 1:
            out, _ = self._run_single_frame_inference(
                inference_state, scratch, frame_idx, 1, False, None, None, run.reverse, True
            )
            return out
        view = self._batched_view(inference_state, [scratch] * size, [obj_id] * size, frame_idx, run.reverse)
        out, _ = self._infer_frame(inference_state, view, frame_idx, size, False, None, None, run.reverse, True)
        # a copy: the row alone is kept (the other rows of the step are copies of it)
        row_out = _split_output(out, row, copy=True)
        self._store_batched_row(inference_state, view, row, frame_idx, row_out)
        return row_out

    def _restore_outputs_on(
        self, inference_state: dict, frame_idx: int, *, unless_temporary: str | None = None
    ) -> None:
        """Put back every object's whole output on ``frame_idx`` where bounded memory dropped
        parts of it (sam2 reads it when a frame gets prompts: the previous mask of a clicked
        object, every object's mask for the consolidated output), but for the objects with a
        temporary output there under ``unless_temporary`` (a storage key), which sam2 reads instead."""
        session = self.session(inference_state)
        if not session.bounded_memory or session.replaying:
            return
        whole = frozenset({frame_idx})
        for obj_idx, obj_id in inference_state["obj_idx_to_id"].items():
            temporary = inference_state["temp_output_dict_per_obj"][obj_idx]
            if unless_temporary is not None and frame_idx in temporary[unless_temporary]:
                continue
            bank = session.bank(inference_state, obj_id)
            self._recompute(inference_state, obj_id, bank, FrameReads(whole, whole, whole), frame_idx)

    @torch.inference_mode()
    def add_new_points_or_box(
        self,
        inference_state,
        frame_idx,
        obj_id,
        points=None,
        labels=None,
        clear_old_points=True,
        normalize_coords=True,
        box=None,
    ):
        """sam2's, with the frame's outputs put back first where bounded memory dropped them
        (but for an object whose temporary output there sam2 reads instead, e.g. after
        ``add_new_mask`` on the frame)."""
        self._restore_outputs_on(
            inference_state, frame_idx, unless_temporary=self._prompt_storage_key(inference_state, frame_idx, obj_id)
        )
        return super().add_new_points_or_box(
            inference_state,
            frame_idx,
            obj_id,
            points=points,
            labels=labels,
            clear_old_points=clear_old_points,
            normalize_coords=normalize_coords,
            box=box,
        )

    def _prompt_storage_key(self, inference_state: dict, frame_idx: int, obj_id: int) -> str | None:
        """Where sam2 keeps a prompt's output for ``obj_id`` on ``frame_idx`` (and looks first for
        its previous mask there): as in its ``add_new_points_or_box``; None for a new object."""
        obj_idx = inference_state["obj_id_to_idx"].get(obj_id)
        if obj_idx is None:
            return None
        tracked = frame_idx in inference_state["frames_tracked_per_obj"][obj_idx]
        return (
            "cond_frame_outputs" if not tracked or self.add_all_frames_to_correct_as_cond else "non_cond_frame_outputs"
        )

    def _consolidate_temp_output_across_obj(self, inference_state, frame_idx, is_cond, consolidate_at_video_res=False):
        """sam2's, with the frame's outputs that it reads put back first where bounded memory
        dropped them."""
        storage_key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        self._restore_outputs_on(inference_state, frame_idx, unless_temporary=storage_key)
        return super()._consolidate_temp_output_across_obj(
            inference_state, frame_idx, is_cond, consolidate_at_video_res
        )

    def _clear_obj_non_cond_mem_around_input(self, inference_state: dict, frame_idx: int, obj_idx: int) -> None:
        """Drop one object's non-conditioning memories around a corrected frame.

        sam2 1.1.0 calls this method when ``clear_non_cond_mem_around_input=True`` but only
        defines the all-objects variant ``_clear_non_cond_mem_around_input``.
        """
        stride = self.memory_temporal_stride_for_eval
        non_cond_outputs = inference_state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]
        first, last = frame_idx - stride * self.num_maskmem, frame_idx + stride * self.num_maskmem
        for t in range(first, last + 1):
            non_cond_outputs.pop(t, None)
        session = self.session(inference_state)
        session.bank(inference_state, inference_state["obj_idx_to_id"][obj_idx]).cleared(first, last)

    def encode_frames(
        self, source: VideoSource, frame_indices: list[int]
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
        """Encode frames outside a tracking session (fitting aligners, training routers).

        Yields:
            (frame index, tokens ``[1, N, C]`` float32, token uncertainty ``[1, N]`` or None).
        """
        images = FrameSource(source, self.image_size)
        for frame_idx in frame_indices:
            backbone_out, uncertainty = self._encode(images[frame_idx][None].to(self.device), frame_idx)
            _, vision_feats, _, _ = self._prepare_backbone_features(backbone_out)
            yield frame_idx, vision_feats[-1].transpose(0, 1).float(), uncertainty

    def _encode(self, image: torch.Tensor, frame_idx: int) -> tuple[dict, torch.Tensor | None]:
        """(sam2's backbone output, token uncertainty or None) of frame ``frame_idx``, ``[1, 3, S, S]``."""
        return self.forward_image(image), None

    def object_texts(self, inference_state: dict) -> dict[int, str]:
        """The object descriptions set on the session (``set_object_text``), by object id."""
        session: TrackingSession | None = inference_state.get(SESSION_KEY)
        return dict(session.object_texts) if session is not None else {}

    def kept_tokens(self, inference_state: dict, frame_idx: int | None = None) -> dict[tuple[int, int], torch.Tensor]:
        """``{(frame_idx, obj_id): keep_idx [k]}`` of every tracked (non-prompted) frame stored
        sparsely, or of frame ``frame_idx`` only (none for the unpruned predictor; with bounded
        memory, only frames whose memory is still held)."""
        session: TrackingSession | None = inference_state.get(SESSION_KEY)
        if session is None:
            return {}
        kept = {}
        for obj_id in inference_state["obj_ids"]:
            for t, conditioning, _, keep_idx in session.bank(inference_state, obj_id).stored_frames():
                if keep_idx is not None and not conditioning and frame_idx in (None, t):
                    kept[(t, obj_id)] = keep_idx[0]
        return kept

    def _frame_entry(
        self, bank: SparseMemoryBank, out: dict, keep_idx: torch.Tensor | None, conditioning: bool
    ) -> dict:
        held = bank.frame_bytes(out, keep_idx)
        memory = out.get("maskmem_features") is not None
        return {
            "kept_tokens": (self.num_tokens if keep_idx is None else int(keep_idx.shape[-1])) if memory else 0,
            "memory_bank_bytes": held.attended,
            "held_bytes": held.held,
            "bytes": asdict(held),
            "conditioning": conditioning,
            "memory": memory,
        }

    def frame_memory(self, inference_state: dict, frame_idx: int) -> dict[int, dict]:
        """What each object's output on one frame holds now, by object id (the entries of
        ``pruning_stats``; objects without an output there are absent). Read it when a frame is
        yielded to know what tracking stored for it before bounded memory drops parts of it."""
        session = self.session(inference_state)
        entries = {}
        for obj_idx, output_dict in inference_state["output_dict_per_obj"].items():
            conditioning = frame_idx in output_dict["cond_frame_outputs"]
            out = output_dict["cond_frame_outputs" if conditioning else "non_cond_frame_outputs"].get(frame_idx)
            if out is not None:
                obj_id = inference_state["obj_idx_to_id"][obj_idx]
                bank = session.bank(inference_state, obj_id)
                entries[obj_id] = self._frame_entry(bank, out, bank.keep_idx_for(out), conditioning)
        return entries

    def pruning_stats(self, inference_state: dict) -> dict:
        """Per frame and object: tokens kept, what memory attention reads back and what the
        frame's stored output holds now; the totals now, and at their peak while tracking.

        Returns:
            ``{"tokens_per_frame": N, "bounded_memory": bool, "frames": {frame_idx: {obj_id:
            {"kept_tokens", "memory_bank_bytes", "held_bytes", "bytes": {"features", "indices",
            "pointers", "masks"}, "conditioning", "memory"}}}, "totals": {"frames",
            "kept_tokens", "tokens", "kept_fraction", "memory_bank_bytes", "held_bytes",
            "peak_memory_bank_bytes", "peak_held_bytes", "replay_bytes"}}``.
            ``memory_bank_bytes`` is what memory attention reads back (features, indices,
            pointer); ``held_bytes`` adds the frame's mask logits, which sam2 keeps for every
            frame. ``memory``: the frame's spatial
            memory is held (with bounded memory a frame may hold only its pointer or its mask;
            its ``kept_tokens`` is then 0). Token counts are over frames holding a memory.
            Frames holding nothing (not tracked, or dropped) are absent. The peaks are the
            largest totals after any tracked frame, or now. ``replay_bytes`` (now, not in the
            held totals nor the peaks): what bounded memory keeps besides, to track dropped
            frames again exactly (``SparseMemoryBank.replay_bytes``; it grows with
            ``replay_checkpoint_every``).
        """
        num_tokens = self.num_tokens
        session = self.session(inference_state)
        frames: dict[int, dict] = {}
        for obj_id in inference_state["obj_ids"]:
            bank = session.bank(inference_state, obj_id)
            for frame_idx, conditioning, out, keep_idx in bank.held_frames():
                frames.setdefault(frame_idx, {})[obj_id] = self._frame_entry(bank, out, keep_idx, conditioning)
        entries = [entry for per_obj in frames.values() for entry in per_obj.values()]
        with_memory = [entry for entry in entries if entry["memory"]]
        kept = sum(entry["kept_tokens"] for entry in with_memory)
        bank_bytes = sum(entry["memory_bank_bytes"] for entry in entries)
        held_bytes = sum(entry["held_bytes"] for entry in entries)
        return {
            "tokens_per_frame": num_tokens,
            "bounded_memory": session.bounded_memory,
            "frames": dict(sorted(frames.items())),
            "totals": {
                "frames": len(frames),
                "kept_tokens": kept,
                "tokens": num_tokens * len(with_memory),
                "kept_fraction": kept / (num_tokens * len(with_memory)) if with_memory else 0.0,
                "memory_bank_bytes": bank_bytes,
                "held_bytes": held_bytes,
                "peak_memory_bank_bytes": max(session.peak_memory_bank_bytes, bank_bytes),
                "peak_held_bytes": max(session.peak_held_bytes, held_bytes),
                "replay_bytes": sum(
                    session.bank(inference_state, obj_id).replay_bytes() for obj_id in inference_state["obj_ids"]
                ),
            },
        }
