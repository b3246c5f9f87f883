"""Overlays of extracted skeletons on the real sample footage, to check the extractor by eye.

    python -m models.motion.overlays /tmp/overlays
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from models import keypoints as K
from models.assets import sample_data
from models.motion.extract import HolisticExtractor
from models.motion.render import draw_overlay
from models.video import read_image, read_video

# Which points to zoom on for each close-up.
ZOOMS = {"body": slice(0, K.FEET.stop), "face": K.FACE, "left_hand": K.LEFT_HAND,
         "right_hand": K.RIGHT_HAND}


def zoomed_overlay(frame: np.ndarray, kps: np.ndarray, part: slice, side: int = 512,
                   margin: float = 0.25) -> np.ndarray:
    """The overlay upscaled and cropped to the confident points of `part`, `side` px square
    (black where nothing was found)."""
    pts = kps[part][kps[part, K.CONF] > 0]
    if len(pts) == 0:
        return np.zeros((side, side, 3), np.uint8)
    h, w = frame.shape[:2]
    lo, hi = pts[:, :2].min(axis=0) * (w, h), pts[:, :2].max(axis=0) * (w, h)
    half = (hi - lo).max() * (0.5 + margin) + 4
    scale = side / (2 * half)
    big = draw_overlay(cv2.resize(frame, None, fx=scale, fy=scale,
                                  interpolation=cv2.INTER_CUBIC), kps, width=2)
    x0, y0 = np.round(((lo + hi) / 2 - half) * scale).astype(int) + side  # + the padding
    return np.pad(big, ((side, side), (side, side), (0, 0)))[y0:y0 + side, x0:x0 + side]


def _save(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def save_overlays(out_dir: Path, *, video_frames: int = 6, video_step: int = 2) -> list[Path]:
    """Extract and draw the skeleton over the basketball photos, the astronaut portrait and
    a few frames of vtest.avi (whole frame, plus close-ups of the body, face and hands);
    returns the PNGs written."""
    from skimage.data import astronaut

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {name: read_image(sample_data(f"opencv-doc/{name}.png"))
              for name in ("basketball1", "basketball2")}
    images["astronaut"] = astronaut()
    written = []
    with HolisticExtractor() as extractor:
        for name, image in images.items():
            kps = extractor.extract_image(image)
            written.append(_save(out_dir / f"{name}.png", draw_overlay(image, kps)))
            written += [_save(out_dir / f"{name}_{zoom}.png", zoomed_overlay(image, kps, part))
                        for zoom, part in ZOOMS.items()]
        clip = read_video(sample_data("opencv-doc/vtest.avi"),
                          max_frames=video_frames * video_step).frames[::video_step]
        for t, (frame, kps) in enumerate(zip(clip, extractor.extract(clip), strict=True)):
            written.append(_save(out_dir / f"vtest_{t:02d}.png", draw_overlay(frame, kps)))
            written.append(_save(out_dir / f"vtest_{t:02d}_body.png",
                                 zoomed_overlay(frame, kps, ZOOMS["body"])))
    return written


if __name__ == "__main__":
    for written_path in save_overlays(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/overlays")):
        print(written_path)
