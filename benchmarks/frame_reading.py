"""How fast ``FrameSource`` hands out frames with 1..N resizing threads (README "Frames on
demand"): ms per frame over a clip looped to FRAMES frames, read forward with nothing else
running, so the time is the reading alone. Frames are normalised by the resizing threads
(float32 kept), as on the CPU; for a GPU the normalisation runs on the device instead.

    .venv/bin/python benchmarks/frame_reading.py [--image-size 1024] [--frames 48] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from sam2prune.cli import embedded_clip
from sam2prune.data.frames import FrameSource
from sam2prune.data.video import VideoSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = VideoSource.open(embedded_clip()).looped(args.frames)
    for workers in args.workers:
        frames = FrameSource(source, args.image_size, uint8_frames=False, workers=workers)
        frames[0]  # threads started, first sweep read
        start = time.perf_counter()
        for index in range(1, len(frames)):
            frames[index]
        per_frame = (time.perf_counter() - start) / (len(frames) - 1) * 1000
        frames.close()
        print(f"{workers} resizing thread(s): {per_frame:.1f} ms a frame at {args.image_size} px")


if __name__ == "__main__":
    main()
