"""Probe a registered DiT's sampling on the evaluation's synthetic held-out pairs.

    .venv/bin/python scripts/probe_teacher_sampling.py motioncontrol-teacher 4 full,noguide,steps1

Needs the stack of the home that holds the model (`make stack-up`). Each variant runs the
model's pipeline end to end and is scored as `motionctl evaluate` scores it (SSIM, PSNR,
LPIPS against the ground truth, seed 0), without the rest of the evaluation (pose PCK, real
photos, baselines, MLflow), so a sampling question takes a minute, not four:

    full      the evaluation's own generator (`flows.evaluate.model_generator`)
    noguide   the version's steps, no guidance
    steps1    one step, no guidance: the clean-clip estimate at t = 1

(What a warp-prior model starts from is the evaluation's "warp prior" row.) The middle frame
of each variant for the first four pairs is written to /tmp/probe_<name>_<version>.png
(truth first), to look at.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from flows.evaluate import benchmark_set, model_generator
from flows.registry import load_bundle
from flows.settings import get_settings
from models.frames import resize_frames
from models.metrics import lpips_or_reason, psnr, ssim
from models.sampling import GuidanceConfig

VARIANTS = ("full", "noguide", "steps1")


def main(name: str, version: int, variants: list[str]) -> None:
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    settings = get_settings()
    bundle = load_bundle(settings, name, version=version)
    size, frames = bundle.resolution, bundle.frames
    make = {"full": lambda: model_generator(bundle, settings),
            "noguide": lambda: _unguided(bundle, bundle.steps),
            "steps1": lambda: _unguided(bundle, 1)}
    generators = {variant: make[variant]() for variant in variants}
    items = [i for i in benchmark_set(settings, bundle.tags.get("dataset_digest"), frames)
             if i.truth is not None]
    scores: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    strip = []
    for item in items:
        truth = resize_frames(item.truth[None], size)[0]
        row = [truth[len(truth) // 2]]
        for variant in variants:
            out = generators[variant](item)[0]
            lp = lpips_or_reason(out, truth, settings.evaluate.lpips_weights)[0]
            scores[variant].append((ssim(out, truth), psnr(out, truth), lp))
            row.append(out[len(out) // 2])
        if len(strip) < 4:
            strip.append(np.concatenate(row, 1))
    print(f"{name} v{version}, {len(items)} pairs: SSIM / PSNR / LPIPS")
    for variant, rows in scores.items():
        s, p, lp = np.asarray(rows, dtype=float).mean(0)
        print(f"  {variant:>8}: {s:.3f} / {p:.2f} / {lp:.3f}")
    image = np.concatenate(strip, 0)
    path = f"/tmp/probe_{name}_{version}.png"
    Image.fromarray(image).resize((image.shape[1] * 3, image.shape[0] * 3),
                                  Image.NEAREST).save(path)
    print(f"  strip: {path}")


def _unguided(bundle, steps: int):
    """generate(item) -> (frames, ...) of the model's pipeline with no guidance."""
    pipe = bundle.pipeline(steps=steps, guidance=GuidanceConfig())

    def generate(item):
        return (pipe(item.reference, item.driving, item.prompt, seed=0,
                     driving_keypoints=item.driving_keypoints).frames,)

    return generate


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","))
