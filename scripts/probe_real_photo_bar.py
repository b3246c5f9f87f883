"""Probe the real-photo bar: how much of the still photo a moving output can keep.

    .venv/bin/python scripts/probe_real_photo_bar.py

No model, no stack: the evaluation's real photos (`flows.evaluate.real_photos`) driven by its
walking pedestrian, at the profile's resolution and frame count (MC_PROFILE, tiny by default).
Per photo, the mean per-frame SSIM to the squared still photo (`models.metrics.ssim`), scored
twice: at the model's resolution (what `ssim_to_reference` in `motionctl evaluate` is) and at
the photo's own resolution (up to 512 px, the output scaled up to it), of

    thumbnail N     the photo shrunk to N px and scaled back up (N = 16, 32, the model's size)
    warp prior      the photo warped to the retargeted driver by the smooth spline a model
                    starts from (the sharpest moving copy of the photo: no VAE, no network)
    warp, no root   the same with the root held still (`retarget(keep_root_motion=False)`)
    still, 1 px     the still photo at the model's size moved one pixel to the right

The issue's bar (a 32 px thumbnail, "about 0.5") is the photo's own 512 px: there the
astronaut's 16 px and 32 px thumbnails score 0.42 and 0.52. A row of the warp below the
32 px thumbnail says that following this driver moves more of the photo than the bar allows;
the one-pixel move says how little that is.
"""

from __future__ import annotations

import cv2
import numpy as np

from flows.evaluate import real_photos
from flows.profiles import run_config
from flows.settings import get_settings
from models.baselines import WARP_PRIOR_SMOOTHING, thumbnail, tps_warp
from models.extraction import square, square_keypoints
from models.metrics import ssim
from models.motion import HolisticExtractor, retarget
from models.person_crop import walking_pedestrian

NATIVE_CAP = 512  # px: the astronaut's own side


def _scaled(frames: np.ndarray, side: int) -> np.ndarray:
    """(T, side, side, 3): bilinear, as `thumbnail` scales up (`resize_frames`' area filter
    would repeat pixels when enlarging)."""
    return np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_LINEAR)
                     for f in frames])


def main() -> None:
    run = run_config(get_settings())
    size, frames = run.resolution, run.clip.frames
    driving = walking_pedestrian(frames).frames
    print(f"{run.profile}: {size}² px, {frames} frames; SSIM to the still photo")
    print(f"  {'photo':<12} {'output':<18} {f'at {size} px':>10} {'at its own px':>14}")
    with HolisticExtractor() as extractor:
        driver = square_keypoints(extractor.extract(driving), *driving.shape[1:3])
        for name, load in real_photos().items():
            photo = load()
            native = min(min(photo.shape[:2]), NATIVE_CAP)
            ref_kps = square_keypoints(extractor.extract_image(photo), *photo.shape[:2])
            # each output at the model's size and at the photo's own (a thumbnail is made at
            # either directly; a warp is made at the model's size and scaled up, as a model's is)
            outputs = {f"thumbnail {side}": (thumbnail(photo, frames, size, side),
                                             thumbnail(photo, frames, native, side))
                       for side in (16, 32, size)}
            # the still photo moved one pixel to the right: what the smallest move costs
            moved = cv2.warpAffine(square(photo, size), np.float32([[1, 0, 1], [0, 1, 0]]),
                                   (size, size), borderMode=cv2.BORDER_REPLICATE)
            moved = np.repeat(moved[None], frames, axis=0)
            outputs["still, 1 px right"] = (moved, _scaled(moved, native))
            for label, root in (("warp prior", True), ("warp, no root", False)):
                pose = retarget(driver, ref_kps, keep_root_motion=root)
                warped = tps_warp(photo, ref_kps, pose, size, WARP_PRIOR_SMOOTHING)
                outputs[label] = (warped, _scaled(warped, native))
            still = {side: np.broadcast_to(square(photo, side), (frames, side, side, 3))
                     for side in (size, native)}
            for label, (small, big) in outputs.items():
                at_size, at_native = ssim(small, still[size]), ssim(big, still[native])
                print(f"  {name:<12} {label:<18} {at_size:>10.3f} {at_native:>10.3f} "
                      f"({native})")


if __name__ == "__main__":
    main()
