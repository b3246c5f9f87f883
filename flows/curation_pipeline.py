"""The curate flow's per-clip work as a streaming pipeline on Ray.

    jobs ─► source ─► extract ─► identity ─► score ─► rows (+ kept clips in the store)
            render    MediaPipe   dlib        flow, filters, annotations,
            or decode (videos)               encoded clip written to the object store

Each stage is a pool of Ray actors (`MC_CURATE__WORKERS` each, or `MC_CURATE__POOLS`), each
actor loading its models once; clips stream from stage to stage as soon as they are ready, and
the driver keeps only a bounded number of them in flight. Workers read videos from and write
clips to the object store themselves. With no address a local Ray starts for the run (one CPU
per worker) and stops after it; `MC_CURATE__RAY_ADDRESS` (or Ray's `RAY_ADDRESS`) uses a
running cluster instead.

Safety: a worker that dies is restarted and its clip retried (Ray's actor restarts); an
exception is retried twice, then the clip is recorded as dropped with its reason. Writes are
keyed by clip, so a retried clip overwrites itself: nothing is lost or duplicated, and the rows
are sorted by key, so the dataset is the same with any number of workers.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from flows.errors import InvalidSettings, ServiceUnavailable
from flows.settings import Settings
from flows.store import STORE_PREFIX, ObjectStore, open_store
from models.curation import CurationThresholds, caption, intensity_label
from models.curation.filters import curate_clip
from models.curation.identity import identity_filter
from models.data.shards import decode_sample, encode_sample, sample_digest
from models.data.sources import (
    ClipSpec,
    Job,
    VideoJob,
    extract_keypoints,
    make_samples,
    sample_key,
    video_windows,
)
from models.errors import InvalidInput

RETRIES = 2  # of a clip whose stage raised, before it is recorded as dropped


# --- rows of the manifest -----------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """A clip's manifest row: the end of its way through the pipeline."""

    row: dict


def clip_row(sample: dict, *, kept: bool, reason: str, failed=("input",), scores=None,
             timings=None) -> dict:
    ann = sample["annotations"]
    return {"key": sample["key"], "source": ann.get("source"), "split": ann.get("split"),
            "identity_id": ann.get("identity_id"), "motion_id": ann.get("motion_id"),
            "kept": kept, "reason": reason, "failed": list(failed if not kept else ()),
            "scores": scores or {},
            "annotations": {k: v for k, v in ann.items() if k != "scores"},
            "timings": timings or {}}


def job_row(job: Job, reason: str, failed=("input",)) -> dict:
    """The row of a job that produced no clip (a corrupt video, a stage that kept failing)."""
    name = getattr(job, "name", None) or getattr(job, "action", type(job).__name__)
    placeholder = {"key": sample_key(job.source, name),
                   "annotations": {"source": job.source, "split": job.split}}
    return clip_row(placeholder, kept=False, reason=reason, failed=failed)


def failed_row(item: Job | dict, stage: str, error: BaseException) -> Finished:
    reason = f"{stage} failed {RETRIES + 1} times: {str(error).strip().splitlines()[-1][:300]}"
    if isinstance(item, dict):
        return Finished(clip_row(item, kept=False, reason=reason, failed=("error",)))
    return Finished(job_row(item, reason, failed=("error",)))


# --- the stages: one instance per Ray actor, models loaded once ------------------------------


class Source:
    """A job's clips: rendered (synthetic, motion capture) or decoded windows of a video, read
    from the object store by the worker itself when the path is `store:<key>`."""

    def __init__(self, settings: Settings, spec: ClipSpec, staging: str):
        self.settings, self.spec = settings, spec

    def __call__(self, job: Job) -> list:
        try:
            if not isinstance(job, VideoJob):
                return make_samples(job, self.spec)
            with self._local_video(job) as path:
                return video_windows(replace(job, path=path), self.spec)
        except InvalidInput as exc:  # bad input: a dropped row with the reason, no retry
            return [Finished(job_row(job, str(exc)))]

    @contextmanager
    def _local_video(self, job: VideoJob) -> Iterator[str]:
        if not job.path.startswith(STORE_PREFIX):
            yield job.path
            return
        key = job.path.removeprefix(STORE_PREFIX)
        with tempfile.TemporaryDirectory(prefix="mc-video-") as tmp:
            local = Path(tmp) / Path(key).name
            open_store(self.settings).get_file(key, local)
            yield str(local)


class Extract:
    """Body, face and hands of decoded video windows (MediaPipe Holistic, one per worker)."""

    def __init__(self, settings: Settings, spec: ClipSpec, staging: str):
        from models.motion import HolisticExtractor

        self.spec, self.extractor = spec, HolisticExtractor()

    def __call__(self, sample: dict) -> list:
        sample = extract_keypoints(sample, self.spec, self.extractor)
        if sample["keypoints"] is None:
            return [Finished(clip_row(sample, kept=False, reason="no person found by the "
                                      "extractor", failed=("person",)))]
        return [sample]

    @staticmethod
    def applies(sample: dict) -> bool:
        return sample["keypoints"] is None  # rendered clips know their keypoints


class Identity:
    """The subject-consistency filter: dlib face identity against the reference image (the
    slowest filter, so it has a pool of its own)."""

    def __init__(self, settings: Settings, spec: ClipSpec, staging: str):
        self.thresholds = settings.curation

    def __call__(self, sample: dict) -> list:
        result = identity_filter(sample["frames"], sample["references"][0], self.thresholds)
        return [{**sample, "identity": result}]


class Score:
    """Every other filter and the annotations; a kept clip is encoded and written to the
    object store's staging prefix, where the flow assembles the shards."""

    def __init__(self, settings: Settings, spec: ClipSpec, staging: str):
        self.thresholds: CurationThresholds = settings.curation
        self.store, self.staging = open_store(settings), staging

    def __call__(self, sample: dict) -> list:
        th = self.thresholds
        ann = dict(sample["annotations"])
        verdict = curate_clip(sample["frames"], sample["keypoints"], sample["references"][0],
                              th, action_phrase=ann.get("action_phrase"),
                              identity=sample.get("identity"))
        measured = verdict.annotations
        # Rendered clips know their camera path exactly; real footage gets the estimate.
        camera_move = ann.get("camera_path") or measured["camera"]
        words = intensity_label(measured["motion_intensity"], th)
        ann.update(motion_intensity=measured["motion_intensity"],
                   motion_level=measured["motion_level"],
                   action_phrase=measured["action_phrase"],
                   camera_move=camera_move, camera_estimate=measured["camera"],
                   caption=caption(measured["action_phrase"], words, camera_move),
                   scores=verdict.scores)
        clip = {k: v for k, v in sample.items() if k != "identity"} | {"annotations": ann}
        row = clip_row(clip, kept=verdict.kept, reason=verdict.reason, failed=verdict.failed,
                       scores=verdict.scores, timings=verdict.timings)
        if verdict.kept:
            for name, data in zip(staged_names(self.staging, clip["key"]), encode_sample(clip),
                                  strict=True):
                self.store.put_bytes(name, data)
            row["digest"] = sample_digest(clip)
        return [Finished(row)]


def staged_names(staging: str, key: str) -> tuple[str, str]:
    """The object-store keys of a kept clip's arrays (.npz) and metadata (.json)."""
    return f"{staging}/{key}.npz", f"{staging}/{key}.json"


def staged_clip(store: ObjectStore, staging: str, key: str) -> dict:
    """A kept clip as the score stage wrote it to the staging prefix."""
    return decode_sample(key, *(store.get_bytes(name) for name in staged_names(staging, key)))


STAGES: dict[str, type] = {"source": Source, "extract": Extract, "identity": Identity,
                           "score": Score}


# --- Ray ------------------------------------------------------------------------------------


class StageWorker:
    """The Ray actor around one stage instance: runs it on an item and times it."""

    def __init__(self, stage: type, *args):
        self.stage = stage(*args)

    def run(self, item) -> tuple[list, float]:
        start = time.perf_counter()
        out = self.stage(item)
        return out, time.perf_counter() - start


@contextmanager
def ray_session(settings: Settings) -> Iterator[dict]:
    """Ray for one curation: the cluster at MC_CURATE__RAY_ADDRESS (or RAY_ADDRESS), else a
    local Ray with one CPU per worker, stopped afterwards. An already-initialised Ray (a
    benchmark, a notebook) is used as it is. Yields {"address", "start_s"}."""
    import ray

    if ray.is_initialized():
        yield {"address": "(already initialised)", "start_s": 0.0}
        return
    address = ray_address(settings)
    start = time.perf_counter()
    common = {"logging_level": logging.WARNING, "log_to_driver": False,
              "configure_logging": True}
    try:
        if address:
            check_ray_address(address)
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=settings.curate.workers, include_dashboard=False,
                     object_store_memory=settings.curate.ray_object_store_mb << 20, **common)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise _unreachable(address, exc) from exc
    try:
        yield {"address": address or "local", "start_s": time.perf_counter() - start}
    finally:
        ray.shutdown()


def ray_address(settings: Settings) -> str | None:
    """The Ray cluster to use: MC_CURATE__RAY_ADDRESS, else Ray's own RAY_ADDRESS; None: a
    local Ray for the run."""
    return settings.curate.ray_address or os.environ.get("RAY_ADDRESS") or None


def _unreachable(address: str | None, exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"no Ray cluster at {address} (MC_CURATE__RAY_ADDRESS or RAY_ADDRESS): "
        f"{str(exc).splitlines()[0]}; check the address (and a port-forward to the head), or "
        "unset it to curate on a local Ray")


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a head that does not answer: Ray retries a GCS address for ever and a
    Ray Client address for 30 s."""
    host_port = address.removeprefix("ray://").split("/", 1)[0]
    if host_port in {"auto", "local"}:
        return
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidSettings(f"MC_CURATE__RAY_ADDRESS={address!r} is not host:port or "
                              "ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise _unreachable(address, exc) from exc


def pool_sizes(settings: Settings, stages: list[str]) -> dict[str, int]:
    unknown = set(settings.curate.pools) - set(STAGES)
    if unknown:
        raise InvalidSettings(f"MC_CURATE__POOLS names unknown stages {sorted(unknown)}; "
                              f"the stages are {', '.join(STAGES)}")
    return {name: settings.curate.pools.get(name, settings.curate.workers) for name in stages}


@dataclass
class PipelineStats:
    """What a run measured: items done and busy seconds per stage."""

    items: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def per_stage(self) -> dict[str, dict]:
        return {name: {"items": n, "seconds": self.seconds[name],
                       "items_per_s_per_worker": n / max(self.seconds[name], 1e-9)}
                for name, n in self.items.items()}


def run_pipeline(jobs: list[Job], spec: ClipSpec, settings: Settings, staging: str, *,
                 on_job_done: Callable[[int, int], None] | None = None,
                 stats: PipelineStats | None = None,
                 stages: dict[str, type] | None = None) -> list[dict]:
    """Every job through the stages on the current Ray; returns the manifest rows sorted by
    key. `on_job_done(done, total)` follows progress; `stats` receives each stage's items and
    seconds; `stages` replaces stage classes by name (the tests wrap one)."""
    import ray

    stats = stats if stats is not None else PipelineStats()
    stage_classes = STAGES | (stages or {})
    names = [n for n in STAGES if n != "extract" or any(isinstance(j, VideoJob) for j in jobs)]
    sizes = pool_sizes(settings, names)
    # Fractions of a CPU, so that every stage's pool fits the local Ray's one CPU per worker:
    # the actors of a stage that has nothing to do must not starve the others.
    cpus = settings.curate.workers / sum(sizes.values())
    actor = ray.remote(StageWorker).options(num_cpus=cpus, max_restarts=-1,
                                            max_task_retries=RETRIES)
    pools = {n: [actor.remote(stage_classes[n], settings, spec, staging) for _ in range(sizes[n])]
             for n in names}
    idle = {n: deque(pools[n]) for n in names}
    queued: dict[str, deque] = {n: deque() for n in names}
    queued[names[0]].extend(enumerate(jobs))  # (job index, item)
    in_flight: dict = {}  # ObjectRef -> (stage, worker, job index, item)
    open_items = defaultdict(int, {i: 1 for i in range(len(jobs))})  # per job
    rows: list[dict] = []
    done = 0
    # Bound what waits between stages: a video's decoded windows are tens of MB each.
    max_waiting = 2 * sum(sizes.values())

    def route(stage_index: int, job: int, item) -> None:
        if isinstance(item, Finished):
            rows.append(item.row)
        else:
            for later in names[stage_index + 1:]:
                if getattr(stage_classes[later], "applies", lambda _: True)(item):
                    queued[later].append((job, item))
                    open_items[job] += 1
                    break
            else:
                raise RuntimeError(f"stage {names[stage_index]} returned an unfinished clip")

    def close(job: int) -> None:
        nonlocal done
        open_items[job] -= 1
        if open_items[job] == 0:
            done += 1
            if on_job_done:
                on_job_done(done, len(jobs))

    try:
        while in_flight or any(queued.values()):
            for name in reversed(names):  # downstream first: finish clips before starting more
                waiting = sum(len(queued[n]) for n in names[1:])
                while queued[name] and idle[name] and (name != names[0]
                                                       or waiting < max_waiting):
                    job, item = queued[name].popleft()
                    worker = idle[name].popleft()
                    ref = worker.run.options(retry_exceptions=True).remote(item)
                    in_flight[ref] = (name, worker, job, item)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            name, worker, job, item = in_flight.pop(ready[0])
            idle[name].append(worker)
            try:
                outputs, seconds = ray.get(ready[0])
                stats.items[name] += 1
                stats.seconds[name] += seconds
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
                outputs = [failed_row(item, name, exc)]
            for output in outputs:
                route(names.index(name), job, output)
            close(job)
    finally:
        for workers in pools.values():
            for worker in workers:
                ray.kill(worker)
    return sorted(rows, key=lambda r: r["key"])
