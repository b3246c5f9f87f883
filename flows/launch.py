"""Launch a distributed training worker and follow it.

Locally the worker runs under `torchrun --standalone` (one node, N processes, gloo on CPU);
on a cluster the same worker module runs in the pods of a Kubernetes job (deploy/). The
worker prints one JSON object per line prefixed with `@@mc ` for progress; everything else
is its log. The caller turns progress lines into a progress bar and keeps the log tail for
the error message when the worker fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from flows.errors import MotionControlError

PROGRESS_PREFIX = "@@mc "


class WorkerFailed(MotionControlError):
    """The training worker exited with an error; the message carries its last log lines."""


def emit(event: dict) -> None:
    """Called in the worker (rank 0): one progress event for the launcher."""
    print(PROGRESS_PREFIX + json.dumps(event), flush=True)


def run_worker(module: str, args: list[str], *, nproc: int = 1, env: dict | None = None,
               log_path: Path, on_event: Callable[[dict], None] = lambda e: None) -> None:
    """Run `module` under torchrun; its whole log goes to `log_path`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", module, *args]
    errors: list[str] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, bufsize=1)
    try:
        with open(log_path, "a") as log:
            for line in proc.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    event = json.loads(line[len(PROGRESS_PREFIX):])
                    if event.get("event") == "error":
                        errors.append(event["error"])
                    on_event(event)
                else:
                    log.write(line)
        code = proc.wait()
    except BaseException:  # interrupted: do not leave the workers behind
        proc.terminate()
        proc.wait(timeout=30)
        raise
    if code != 0:
        why = errors[0] if errors else f"exit code {code}"
        why = why if len(why) < 600 else why[:600] + " …"
        raise WorkerFailed(f"training worker failed: {why} (full log: {log_path})")


# --- launchers ------------------------------------------------------------------------------
# How a training plan reaches its workers: "local" (torchrun on this machine) is built in;
# "kubernetes" (a multi-node PyTorchJob, the `base` profile) lives in deploy/, which flows/
# never imports: it is found through the entry-point group below (pyproject.toml), so a flow
# started by the CLI, a Prefect worker or a pod finds it alike.
Launcher = Callable[..., None]  # (settings, plan_json, plan_path, log_path, on_event)
LAUNCHERS: dict[str, Launcher] = {}
LAUNCHER_ENTRY_POINTS = "motioncontrol.launchers"


def register_launcher(name: str, launcher: Launcher) -> None:
    LAUNCHERS[name] = launcher


def default_nproc(threads: int = 1) -> int:
    """Ranks on this machine: one per GPU; on a CPU, one per `threads` cores, at most 4.
    Two ranks on two cores train the tiny profile 1.8x faster than one: a step's data
    preparation (VAE encode, pose maps, text) is single-threaded, so a second rank overlaps
    it instead of a second torch thread idling."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, min(4, (os.cpu_count() or 1) // threads))


def local_launcher(settings, plan_json: str, plan_path: str, log_path: Path,
                   on_event: Callable[[dict], None]) -> None:
    nproc = settings.train.nproc or default_nproc(settings.train.threads)
    run_worker("flows.train_worker", [plan_path], nproc=nproc,
               log_path=log_path, on_event=on_event)


register_launcher("local", local_launcher)


def launcher_for(settings) -> Launcher:
    name = settings.train.launcher or ("kubernetes" if settings.profile == "base" else "local")
    if name not in LAUNCHERS:
        for entry in metadata.entry_points(group=LAUNCHER_ENTRY_POINTS, name=name):
            register_launcher(name, entry.load())
    if name not in LAUNCHERS:
        raise MotionControlError(
            f"training launcher {name!r} is not available here (known: {sorted(LAUNCHERS)}); "
            "the kubernetes launcher is deploy/'s (reinstall the project, `make setup`, if it "
            "is missing), or set MC_TRAIN__LAUNCHER=local")
    return LAUNCHERS[name]
