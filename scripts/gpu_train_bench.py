"""Samples/s, FLOP/s, MFU and peak memory of one teacher training step on a GPU (or the CPU).

The step is the model alone (tests/bench/train_step.py): MotionDiT forward in bf16 autocast
on a fixed random batch of the profile's shapes, flow-matching loss, backward, AdamW, with
random weights. MFU is against the H200's datasheet dense bf16 peak on an H200 (the measured
bf16 matmul rate is printed beside it; on another GPU that rate is the denominator) and the
measured fp32 matmul rate on the CPU.

    python3 scripts/gpu_train_bench.py --out gpu_training.json                # small, stage 1, 60 s
    python3 scripts/gpu_train_bench.py --device cpu --profile tiny --steps 2 --out tiny.json

Options: --profile, --stage, --batch (default: the stage's per-rank batch), --steps or
--seconds, --warmup, --threads; `--help` lists them.
"""

import importlib.util
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

# flows.profiles imports models.video (through models.data.sources), which imports the video
# I/O packages at load time. The lent GPU machine's image lacks them (it has torch, numpy,
# cv2 and rich), and this step reads no video: where one is missing, a MagicMock stands in
# so that the import succeeds; nothing here calls it.
for _name in ("decord", "imageio_ffmpeg"):
    if importlib.util.find_spec(_name) is None:
        print(f"gpu_train_bench: {_name} is not installed; video I/O is unavailable (unused)")
        sys.modules[_name] = mock.MagicMock(name=_name)

from tests.bench.train_step import main  # noqa: E402

if __name__ == "__main__":
    main()
