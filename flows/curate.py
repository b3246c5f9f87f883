"""Prefect flow `curate` (`make curate`, `motionctl curate`).

sources (synthetic generator, motion capture, real videos) → clips → filters + annotations →
shards + manifest in the object store under `datasets/<name>/<digest>/` → an MLflow run in
experiment `curation`. The work is mapped over jobs (one motion on several characters, or one
video) with retries; the same inputs give the same dataset, which is reused, not rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from rich.progress import Progress

from flows.curation_pipeline import (
    PipelineStats,
    check_ray_address,
    ray_address,
    ray_session,
    run_pipeline,
    staged_clip,
)
from flows.profiles import run_config
from flows.settings import Settings, get_settings
from flows.store import STORE_PREFIX, ObjectStore, open_store
from flows.tracking import ensure_experiment
from flows.ui import log_progress, report_run, say
from models.assets import bvh_files, sample_data
from models.curation import CurationThresholds
from models.data.shards import json_default, write_shards
from models.data.sources import ClipSpec, Job, MocapJob, SyntheticJob, VideoJob
from models.errors import InvalidInput

# Bump when what a job produces changes, so old datasets are not reused for new code.
CURATION_VERSION = 1
HELDOUT_SEED = 100_000  # held-out characters and motion variants start here


@dataclass
class CurationResult:
    dataset: str
    digest: str
    prefix: str  # object-store prefix of the shards and manifest
    clips_total: int
    clips_kept: int
    reused: bool
    mlflow_run_id: str | None


# --- planning -----------------------------------------------------------------------------


def clip_spec(settings: Settings) -> ClipSpec:
    return run_config(settings).clip


def plan_jobs(settings: Settings, spec: ClipSpec) -> list[Job]:
    """Every job of a curation run, in a fixed order. Training uses characters 0..N-1 and
    motion variants 0..S-1; the held-out split uses characters and variants never trained on
    (and the last window of each mocap take)."""
    from models.synthetic import ACTIONS, motion_from_bvh

    c = settings.curate
    group = c.characters_per_motion
    jobs: list[Job] = []

    def characters(index: int, base: int, pool: int) -> tuple[int, ...]:
        return tuple(base + (index * group + k) % pool for k in range(min(group, pool)))

    cameras = ("static", "pan_left", "pan_right", "zoom_in", "zoom_out", "tilt_up", "random")
    actions = sorted(c.actions or ACTIONS)
    n = 0
    for action in actions:
        for intensity in c.intensities:
            for seed in range(c.motion_seeds):
                jobs.append(SyntheticJob(action, intensity, seed, characters(n, 0, c.characters),
                                         cameras[n % len(cameras)]))
                n += 1
    for i, action in enumerate(actions[:c.heldout_actions]):
        jobs.append(SyntheticJob(action, c.intensities[-1], HELDOUT_SEED + i,
                                 characters(i, HELDOUT_SEED, c.heldout_characters),
                                 cameras[i % len(cameras)], split="eval"))
    for path in bvh_files() if c.mocap_windows else []:
        # The take's last window is held out and the training windows end before it starts:
        # overlapping ones put held-out frames in training (14 of 17 in the 28-frame freebvh
        # take at 12 fps). A take too short for both is held out whole.
        heldout_start = motion_from_bvh(path, fps=spec.fps).frames - spec.frames
        train = (np.linspace(0, heldout_start - spec.frames, c.mocap_windows).astype(int)
                 if heldout_start >= spec.frames else [])
        starts = [*train, heldout_start]
        for w, start in enumerate(starts):
            heldout = w == len(starts) - 1
            jobs.append(MocapJob(str(path), int(start),
                                 characters(n, HELDOUT_SEED if heldout else 0,
                                            c.heldout_characters if heldout else c.characters),
                                 cameras[n % len(cameras)], split="eval" if heldout else "train"))
            n += 1
    if c.video_windows:
        jobs += [VideoJob(path, name, max_windows=c.video_windows, limits=settings.video)
                 for name, path in video_files(settings)]
    return jobs


def video_files(settings: Settings) -> list[tuple[str, str]]:
    """(name, path) of the real videos to curate: a folder, an object-store prefix (paths
    `store:<key>`, which the workers read themselves), or the bundled sample."""
    where = settings.curate.videos
    suffixes = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
    if where is None:
        return [("vtest.avi", str(sample_data("opencv-doc/vtest.avi")))]
    if where.startswith(STORE_PREFIX):  # the curation workers read them from the store
        store, prefix = open_store(settings), where.removeprefix(STORE_PREFIX)
        return [(info.key, STORE_PREFIX + info.key) for info in store.list(prefix)
                if Path(info.key).suffix.lower() in suffixes]
    folder = Path(where).expanduser()
    if not folder.is_dir():
        raise InvalidInput(f"MC_CURATE__VIDEOS={where!r} is not a folder; give a folder of "
                           "videos or 'store:<prefix>'")
    return [(p.name, str(p)) for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes]


def inputs_key(jobs: list[Job], spec: ClipSpec, thresholds: CurationThresholds) -> str:
    """Names the inputs of a run: same key, same dataset."""
    payload = json.dumps({"version": CURATION_VERSION, "spec": dataclasses.asdict(spec),
                          "thresholds": dataclasses.asdict(thresholds),
                          "jobs": [[type(j).__name__, dataclasses.asdict(j)] for j in jobs]},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- the flow -----------------------------------------------------------------------------


def check_inputs(settings: Settings) -> None:
    """Fail before the flow starts, in one line, on what the user can fix: unknown actions,
    a missing videos folder, an unreachable store or tracking server."""
    from models.synthetic import ACTIONS

    unknown = set(settings.curate.actions or ()) - set(ACTIONS)
    if unknown:
        raise InvalidInput(f"MC_CURATE__ACTIONS names unknown actions {sorted(unknown)}; "
                           f"known: {', '.join(sorted(ACTIONS))}")
    video_files(settings)
    open_store(settings)
    ensure_experiment(settings, "curation")
    if address := ray_address(settings):
        check_ray_address(address)


def run_curation(settings: Settings, force: bool = False) -> CurationResult:
    check_inputs(settings)  # a bad input fails in one line, before Prefect starts
    return curate_flow(force=force)


@flow(name="curate")
def curate_flow(force: bool = False) -> CurationResult:
    """Curate the dataset named by MC_CURATE__DATASET from the configured sources; reuse it
    when the inputs are unchanged (`force` rebuilds)."""
    settings = get_settings()
    store = open_store(settings)
    spec = clip_spec(settings)
    jobs = plan_jobs(settings, spec)
    key = inputs_key(jobs, spec, settings.curation)
    name = settings.curate.dataset
    index_key = f"datasets/{name}/inputs/{key}.json"

    if not force and store.exists(index_key):
        previous = json.loads(store.get_bytes(index_key))
        if store.exists(f"{previous['prefix']}/manifest.json"):
            say(f"same inputs as dataset {name}@{previous['digest']}: reusing it "
                  "(pass --force to rebuild)")
            return CurationResult(**{**previous, "reused": True})

    started = time.perf_counter()
    staging = f"datasets/{name}/staging/{key}"  # kept clips, written there by the workers
    try:
        rows, pipeline = run_jobs(jobs, spec, settings, staging)
        curate_s = time.perf_counter() - started
        result = _publish(store, settings, name, key, rows, staging, spec, curate_s, pipeline)
    finally:
        store.delete_prefix(staging)
    store.put_bytes(index_key, json.dumps(dataclasses.asdict(result)).encode())
    say(f"dataset {name}@{result.digest}: kept {result.clips_kept} of {result.clips_total} "
          f"clips in {time.perf_counter() - started:.0f} s -> {store.uri(result.prefix)}")
    return result


@task(name="curate-on-ray", cache_policy=NO_CACHE)  # per-clip retries are Ray's, not Prefect's
def run_jobs(jobs: list[Job], spec: ClipSpec, settings: Settings,
             staging: str) -> tuple[list[dict], dict]:
    """Every job through the Ray pipeline (flows/curation_pipeline.py), with a progress bar
    here and a line per tenth of the jobs in the flow run's log. Returns the rows and what
    the pipeline measured (Ray's address and start-up, seconds per stage)."""
    stats = PipelineStats()
    with ray_session(settings) as ray_info, Progress(transient=True) as progress:
        bar = progress.add_task(f"curating {len(jobs)} jobs on Ray ({ray_info['address']})",
                                total=len(jobs))

        def job_done(done: int, total: int) -> None:
            progress.update(bar, completed=done)
            log_progress(done, total, f"curated {done}/{total} jobs")

        rows = run_pipeline(jobs, spec, settings, staging, on_job_done=job_done, stats=stats)
    return rows, {**ray_info, "stages": stats.per_stage()}


def _tmp_dir(settings: Settings) -> Path:
    path = settings.home / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _publish(store: ObjectStore, settings: Settings, name: str, key: str, rows: list[dict],
             staging: str, spec: ClipSpec, curate_s: float, pipeline: dict) -> CurationResult:
    from flows.curation_report import log_curation_run

    kept = sorted((r for r in rows if r["kept"]), key=lambda r: (r["motion_id"], r["key"]))
    if not kept:
        raise InvalidInput("curation kept no clip; see the reasons in the log and relax "
                           "MC_CURATION__* thresholds if they are too strict")
    full = hashlib.sha256("\n".join(sorted(r["digest"] for r in kept)).encode()).hexdigest()
    digest = full[:16]
    prefix = f"datasets/{name}/{digest}"

    def load(clip_key: str) -> dict:
        return staged_clip(store, staging, clip_key)

    with tempfile.TemporaryDirectory(prefix="shards-", dir=_tmp_dir(settings)) as shard_dir:
        shards = write_shards((load(row["key"]) for row in kept), Path(shard_dir),
                              max_bytes=settings.curate.shard_mb << 20, presorted=True)
        shard_rows = []
        key_to_shard = {}
        for info in shards:
            obj = store.put_file(f"{prefix}/{info.path.name}", info.path)
            shard_rows.append({"key": obj.key, "samples": len(info.keys), "bytes": obj.size,
                               "sha256": obj.sha256})
            key_to_shard.update(dict.fromkeys(info.keys, obj.key))
    for row in rows:
        row["shard"] = key_to_shard.get(row["key"])
    manifest = {
        "dataset": name, "digest": digest, "digest_sha256": full, "inputs_key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "clip_spec": dataclasses.asdict(spec),
        "thresholds": dataclasses.asdict(settings.curation),
        "counts": _counts(rows), "shards": shard_rows, "clips": rows,
    }
    manifest_bytes = json.dumps(manifest, indent=1, default=json_default).encode()
    store.put_bytes(f"{prefix}/manifest.json", manifest_bytes)
    run_id = log_curation_run(settings, manifest, manifest_bytes, load, curate_s, pipeline)
    report_run(settings, "curation", run_id, [
        {"count": k.replace("_", " "), "clips": v} for k, v in manifest["counts"].items()],
        f"dataset {name}@{digest}: clips kept (by source and split) and dropped (by the "
        "filter that dropped them)")
    return CurationResult(name, digest, prefix, len(rows), len(kept), False, run_id)


def _counts(rows: list[dict]) -> dict:
    out = {"clips_total": len(rows), "clips_kept": sum(r["kept"] for r in rows)}
    for field in ("source", "split"):
        for value, n in Counter(r[field] for r in rows if r["kept"]).items():
            out[f"kept_{field}_{value}"] = n
    failed = Counter(name for r in rows for name in r["failed"])
    out.update({f"dropped_by_{name}": n for name, n in failed.items()})
    return out

