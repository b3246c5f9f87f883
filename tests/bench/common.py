"""Shared by the benchmarks: timing, the machine description and the JSON report.

Every benchmark measures a candidate against a named baseline in the same run, prints a
table of ratios, and writes `reports/bench/<name>.json` with the machine, the inputs, every
figure and the baseline.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPORTS = Path(__file__).resolve().parents[2] / "reports" / "bench"


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def timeit(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> dict:
    """Median and min wall time of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": times}


def write_report(name: str, *, inputs: dict, baseline: str, results: dict,
                 path: Path | None = None) -> Path:
    """Write the report at `path` (default: reports/bench/<name>.json)."""
    path = path or REPORTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": name, "machine": machine(), "inputs": inputs,
              "baseline": baseline, "results": results}
    path.write_text(json.dumps(report, indent=2, default=float))
    return path


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)
