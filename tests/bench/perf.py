"""Triton's own load generator, `perf_analyzer` (shipped in the tritonclient wheel), made to
run here, and its input data for the `motion_control` entry model.

The binary links two shared libraries that no system package provides on this machine:
`libb64.so.0d` (bundled by nvidia-pytriton under a hashed name) and `libcudart.so.12` (the
`nvidia-cuda-runtime-cu12` wheel of requirements/dev.in; perf_analyzer loads it even against
a CPU-only server). `perf_analyzer_env` puts both on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

SITE = Path(sysconfig.get_paths()["purelib"])  # the venv's site-packages


def perf_analyzer_binary() -> Path:
    return Path(sys.executable).parent / "perf_analyzer"


def perf_analyzer_env(scratch: Path) -> dict[str, str]:
    """The environment perf_analyzer starts in: its two libraries found."""
    import nvidia.cuda_runtime  # the wheel's package: lib/libcudart.so.12

    (b64,) = (SITE / "nvidia_pytriton.libs").glob("libb64-*.so.0d")
    scratch.mkdir(parents=True, exist_ok=True)
    link = scratch / "libb64.so.0d"
    if not link.exists():
        link.symlink_to(b64)
    cudart = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
    paths = [str(scratch), str(cudart), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}


def bytes_tensor(*items: bytes) -> dict:
    """A BYTES tensor for perf_analyzer's --input-data JSON: Triton's raw serialisation
    (each element a 4-byte little-endian length, then its bytes), base64-encoded."""
    raw = b"".join(struct.pack("<I", len(item)) + item for item in items)
    return {"b64": base64.b64encode(raw).decode(), "shape": [len(items)]}


def request_data(reference: bytes, driving: bytes, prompt: str, seed: int = 0) -> dict:
    """One request to `motion_control` (serving/spec.py's inputs)."""
    return {"REFERENCE_IMAGE": bytes_tensor(reference), "DRIVING_VIDEO": bytes_tensor(driving),
            "PROMPT": bytes_tensor(prompt.encode()), "SEED": {"content": [seed], "shape": [1]}}


def run_perf_analyzer(grpc_url: str, model: str, requests: list[dict], count: int,
                      scratch: Path, concurrency: int = 1, timeout_s: float = 3600) -> dict:
    """Send `count` requests (cycling through `requests`) at `concurrency`; returns the
    figures of perf_analyzer's CSV report (latencies in microseconds) and its output."""
    scratch.mkdir(parents=True, exist_ok=True)
    data, report = scratch / "input.json", scratch / "report.csv"
    data.write_text(json.dumps({"data": requests}))
    command = [str(perf_analyzer_binary()), "-m", model, "-u", grpc_url, "-i", "grpc",
               "--input-data", str(data), "--request-count", str(count),
               "--concurrency-range", f"{concurrency}:{concurrency}", "-f", str(report),
               "--measurement-mode", "count_windows",
               "--measurement-request-count", str(count)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                          env=perf_analyzer_env(scratch / "lib"))
    if proc.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                           f"\n{proc.stderr[-3000:]}")
    with open(report) as fh:
        (row,) = list(csv.DictReader(fh))
    return {"row": row, "output": proc.stdout}
