"""Fixtures of the benchmarks."""

from __future__ import annotations

import pytest

from flows.profiles import profile_config
from flows.settings import load_settings
from serving.repository import build_and_upload, download_repository
from tests.conftest import free_port
from tests.tiny_models import publish_tiny_student


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A registered tiny student at the tiny profile's shapes (17 frames, its few sampler
    steps; random weights: the serving path is measured, not quality) and its Triton
    repository on disk, with free ports for a server: (settings, version, repository)."""
    for name in ("HTTP", "GRPC", "METRICS"):
        monkeypatch.setenv(f"MC_TRITON_{name}_PORT", str(free_port()))
    settings = load_settings()
    tiny = profile_config("tiny")
    version, _ = publish_tiny_student(settings, frames=tiny.clip.frames,
                                      steps=tiny.sampling.student_steps)
    repository = download_repository(settings, build_and_upload(settings), tmp_path / "repo")
    return settings, version, repository
