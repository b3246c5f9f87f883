"""The README's frame strip from what `make demo` leaves in <home>/demo:
reference | driving | generated, one row each for the first, middle and last frame.

    .venv/bin/python scripts/demo_strip.py [.local] [docs/images/demo-strip.jpg]

The demo's driver is real footage of someone else, so there is no ground truth to show; the
held-out strips with one are the `samples` images of each training stage in MLflow.
"""
import sys
from pathlib import Path

import cv2
import numpy as np

from models.video import read_video

SIDE = 160  # px per cell: the README shows the strip at its own size


def fit(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """The whole image, scaled into a black side² square (a landscape driver keeps its width)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    out = np.zeros((side, side, 3), np.uint8)
    top, left = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out


def main(home: str = ".local", dest: str = "docs/images/demo-strip.jpg") -> None:
    demo = Path(home) / "demo"
    reference = cv2.imread(str(demo / "reference.png"))  # BGR, as cv2 writes it back
    if reference is None:
        raise SystemExit(f"no {demo / 'reference.png'}: run `make demo` first")
    driving = read_video(str(demo / "driving.mp4")).frames[..., ::-1]
    generated = read_video(str(demo / "animated.mp4")).frames[..., ::-1]
    n = min(len(driving), len(generated))
    rows = [np.concatenate([fit(reference), fit(driving[k]), fit(generated[k])], axis=1)
            for k in (0, n // 2, n - 1)]
    cv2.imwrite(dest, np.concatenate(rows, axis=0), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {dest} ({n} frames: first, middle, last)")


if __name__ == "__main__":
    main(*sys.argv[1:])
