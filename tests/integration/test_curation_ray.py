"""The curation pipeline on a real local Ray (flows/curation_pipeline.py): the same rows and
clips with 1 and 2 workers, a worker killed mid-clip loses and duplicates nothing, a stage
that keeps failing is recorded with its reason after its retries, a Ray address that does
not answer is one clear line.

The small job set has every path: two rendered cross-identity groups, real footage (vtest.avi,
MediaPipe in the extract stage) and a corrupt video (a dropped row)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import ray

from flows.curate import clip_spec
from flows.curation_pipeline import (
    Identity,
    PipelineStats,
    ray_session,
    run_pipeline,
    staged_clip,
)
from flows.errors import InvalidSettings, ServiceUnavailable
from flows.settings import load_settings
from flows.store import open_store
from models.assets import sample_data
from models.data.sources import SyntheticJob, VideoJob

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test stages below

STAGING = "datasets/test/staging/k"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("ray-home")


def settings_for(home: Path, workers: int):
    settings = load_settings(home=home)
    return settings.model_copy(update={"curate": settings.curate.model_copy(
        update={"workers": workers})})


def jobs(home: Path) -> list:
    broken = home / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return [SyntheticJob("wave", 0.9, 0, (0, 1), "static"),
            SyntheticJob("clap", 0.9, 0, (2, 3), "pan_left"),
            VideoJob(str(sample_data("opencv-doc/vtest.avi")), "vtest.avi", max_windows=2),
            VideoJob(str(broken), "broken.mp4")]


def curate(home: Path, workers: int, **kwargs) -> tuple[list[dict], PipelineStats]:
    settings = settings_for(home, workers)
    stats = PipelineStats()
    with ray_session(settings):
        rows = run_pipeline(jobs(home), clip_spec(settings), settings, STAGING, stats=stats,
                            **kwargs)
    return rows, stats


def decisions(rows: list[dict]) -> list[tuple]:
    return [(r["key"], r["kept"], r["failed"], r.get("digest"),
             {k: round(v, 4) for k, v in r["scores"].items()}) for r in rows]


@pytest.fixture(scope="module")
def one_worker(home):
    return curate(home, workers=1)


def test_every_job_gives_its_rows_and_kept_clips_are_in_the_store(one_worker, home):
    rows, stats = one_worker
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 4 + 2 + 1  # two groups of 2, 2 windows, 1 broken
    assert {r["source"] for r in rows} == {"synthetic", "video"}
    broken = next(r for r in rows if "broken" in r["key"])
    assert not broken["kept"] and "broken.mp4" in broken["reason"]
    assert broken["failed"] == ["input"]
    kept = [r for r in rows if r["kept"]]
    assert kept, "the rendered clips pass the filters"
    store = open_store(settings_for(home, 1))
    for row in kept:
        clip = staged_clip(store, STAGING, row["key"])
        assert clip["frames"].shape == (17, 128, 128, 3)
        assert clip["annotations"]["caption"]
    windows = [r for r in rows if r["source"] == "video" and "broken" not in r["key"]]
    for row in windows:  # scored, so MediaPipe (the extract stage) found the pedestrian
        assert any(k.startswith("keypoint_coverage.") for k in row["scores"]), row
    # every stage ran, each item once: 4 jobs, 2 windows extracted, 6 clips through dlib
    assert dict(stats.items) == {"source": 4, "extract": 2, "identity": 6, "score": 6}


def test_the_same_rows_with_two_workers(one_worker, home):
    rows, _ = curate(home, workers=2)
    assert decisions(rows) == decisions(one_worker[0])


class MarkedIdentity(Identity):
    """The real identity stage, leaving a `<pid>.busy` file while it works on a clip, so the
    test can kill a worker that is certainly mid-clip."""

    busy_dir = ""

    def __call__(self, sample):
        marker = Path(self.busy_dir) / f"{os.getpid()}.busy"
        marker.touch()
        try:
            return super().__call__(sample)
        finally:
            marker.unlink(missing_ok=True)


def test_a_worker_killed_mid_clip_loses_and_duplicates_nothing(one_worker, home, tmp_path):
    MarkedIdentity.busy_dir = str(tmp_path)
    killed: list[int] = []
    stop = threading.Event()

    def kill_the_first_busy_worker():
        while not stop.is_set() and not killed:
            for marker in tmp_path.glob("*.busy"):
                os.kill(int(marker.stem), signal.SIGKILL)
                killed.append(int(marker.stem))
                break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_first_busy_worker, daemon=True)
    killer.start()
    try:
        rows, stats = curate(home, workers=2, stages={"identity": MarkedIdentity})
    finally:
        stop.set()
    assert killed, "no identity worker was killed"
    assert decisions(rows) == decisions(one_worker[0])
    assert stats.items["identity"] == 6  # the killed clip counted once, when it was redone


class AlwaysFailingOnClap(Identity):
    """A stage that raises on one clip every time (a poison clip), counting its attempts."""

    attempts_dir = ""

    def __call__(self, sample):
        if sample["key"].startswith("clap"):
            (Path(self.attempts_dir) / f"{time.monotonic_ns()}").touch()
            raise RuntimeError(f"dlib crashed on {sample['key']}")
        return super().__call__(sample)


def test_a_clip_whose_stage_keeps_failing_is_recorded_with_its_reason(one_worker, home,
                                                                     tmp_path):
    AlwaysFailingOnClap.attempts_dir = str(tmp_path)
    rows, _ = curate(home, workers=2, stages={"identity": AlwaysFailingOnClap})
    failed = [r for r in rows if r["key"].startswith("clap")]
    assert len(failed) == 2 and not any(r["kept"] for r in failed)
    for row in failed:
        assert row["failed"] == ["error"]
        assert "identity failed 3 times" in row["reason"] and "dlib crashed" in row["reason"]
    assert len(list(tmp_path.iterdir())) == 2 * 3  # two clips, 1 try + 2 retries each
    def others(rows):
        return decisions([r for r in rows if not r["key"].startswith("clap")])

    assert others(rows) == others(one_worker[0])  # the rest of the run is untouched


def test_an_unreachable_ray_address_is_one_clear_line(home, monkeypatch):
    monkeypatch.setenv("MC_CURATE__RAY_ADDRESS", "ray://127.0.0.1:9")
    settings = settings_for(home, 1)
    start = time.monotonic()
    with (pytest.raises(ServiceUnavailable, match=r"no Ray cluster at ray://127\.0\.0\.1:9"),
          ray_session(settings)):
        pass
    assert time.monotonic() - start < 15  # not Ray's own minutes of retries
    assert not ray.is_initialized()


def test_unknown_stage_in_pools_names_the_stages(home, monkeypatch):
    monkeypatch.setenv("MC_CURATE__POOLS", '{"dlib": 4}')
    settings = settings_for(home, 1)
    with pytest.raises(InvalidSettings, match="source, extract, identity, score"):
        run_pipeline([], clip_spec(settings), settings, STAGING)
