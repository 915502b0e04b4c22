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
from sam2.sam2_video_predictor import SAM2VideoPredictor
from tqdm import tqdm

from sam2prune.data.video import VideoSource

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
    """The official SAM 2 video predictor (the unpruned baseline), with three changes:

    - ``init_state`` also reads folders of PNG frames, names that are not plain integers
      (natural sort) and any video file, and checks frames (size, corrupt files) up front;
    - sam2's missing CUDA extension is reported once instead of warned about on every frame;
    - the bf16 memory bank is cast before memory attention (see ``attention.MemoryAttention``),
      and the per-object memory clearing that 1.1.0 calls but lacks is implemented.

    Masks and logits are those of ``sam2.sam2_video_predictor.SAM2VideoPredictor``.
    """

    model_name: str = "sam2"
    random_weights: bool = False

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
