"""Serving end to end with the real tritonserver: a repository built from a registered tiny
student (its weights are random and untrained: the serving path is under test, not the
quality of the video), uploaded to the object store and served from a copy of it; requests
over gRPC with a real photo and real footage; bad inputs; the watermark and provenance.

One server for the module, started with `motionctl serve` and stopped with SIGTERM (its
start costs ~40 s, mostly loading SmolLM2)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from flows.settings import STUDENT_MODEL, load_settings
from flows.stack import is_healthy
from models.assets import sample_data
from models.errors import InvalidInput
from models.video import encode_mp4, read_video
from motionctl.cli import app
from serving.client import MotionControlClient, verify
from serving.repository import build_and_upload, fetch_repository
from tests.integration.served import Served, serving_env, start_serving
from tests.serving_requests import bad_requests, raw_request
from tests.tiny_models import publish_tiny_student

FRAMES = 9  # the tiny student's clip length; driving clips of 17 frames take two windows


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serving-home")
    env = serving_env(home) | {"MC_SERVE__WINDOW_BATCH": "1"}  # one window per sampler call
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    settings = load_settings()
    version, _ = publish_tiny_student(settings, frames=FRAMES)
    prefix = build_and_upload(settings)  # alias champion by default
    assert prefix == f"model-repository/{version}/"
    # as the serving pod's init step does on a cluster
    repository = fetch_repository(settings, version, home / "served")
    served = start_serving(repository, env, version)
    try:
        yield served.wait_ready()
    finally:
        served.stop()
        mp.undo()


@pytest.fixture(scope="module")
def inputs():
    reference = sample_data("opencv-doc/basketball1.png").read_bytes()
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=17)
    driving = encode_mp4(clip.frames, clip.fps)
    return reference, driving, clip


def test_a_request_gets_a_watermarked_mp4_of_every_driving_frame(server, inputs, tmp_path):
    settings, version = server.settings, server.version
    reference, driving, clip = inputs
    with MotionControlClient(server.grpc_url, settings=settings) as client:
        assert client.ready()
        video = client.animate(reference, driving, "a person walking, the camera pans left",
                               subject_library=[sample_data("opencv-doc/basketball2.png")],
                               seed=7)
    out = read_video(video)
    assert out.frames.shape == (17, 256, 256, 3)  # two anchored windows joined, upscaled
    assert out.fps == pytest.approx(clip.fps)
    check = verify(video)
    assert check.watermark.found, check
    assert check.provenance["model"] == STUDENT_MODEL
    assert check.provenance["version"] == str(version)

    path = tmp_path / "out.mp4"
    path.write_bytes(video)
    result = CliRunner().invoke(app, ["verify", str(path)])
    assert result.exit_code == 0 and "watermark found" in result.output, result.output
    assert is_healthy(server.metrics_url)  # Prometheus metrics are on


def test_a_long_clip_streams_its_progress_and_frames_into_the_mp4(server, inputs, tmp_path):
    """motion_control_stream: 17 driving frames are two windows of 9, one per sampler call
    (MC_SERVE__WINDOW_BATCH=1), after three keyframe calls. The plan comes first, then each
    call's progress with the frames it finished; the mp4 is written as they arrive and is
    the unary call's video (same seed), watermarked, with its provenance."""
    settings = server.settings
    reference, driving, clip = inputs
    seen = []
    with MotionControlClient(server.grpc_url, settings=settings) as client:
        path = client.animate_to_file(tmp_path / "streamed.mp4", reference, driving,
                                      "a person walking", seed=7, progress=seen.append)
        unary = read_video(client.animate(reference, driving, "a person walking", seed=7))
        half = driving[:len(driving) // 2]
        with pytest.raises(InvalidInput, match="driving video"):  # typed, as the unary call
            next(client.animate_stream(reference, half, "x"))
    assert [(p.done, p.total) for p in seen] == [(i, 5) for i in range(6)]
    assert [len(p.frames) for p in seen] == [0, 0, 0, 0, 8, 9]
    assert all(p.frames.shape[1:] == (256, 256, 3) for p in seen)  # the empty parts too
    assert seen[0].fps == pytest.approx(clip.fps)
    streamed = read_video(path)
    assert streamed.frames.shape == (17, 256, 256, 3)
    assert np.abs(streamed.frames.astype(int) - unary.frames).mean() < 3  # two encodes
    check = verify(path)
    assert check.watermark.found and check.provenance["version"] == str(server.version), check

    ref, drv = tmp_path / "ref.png", tmp_path / "drv.mp4"
    ref.write_bytes(reference)
    drv.write_bytes(driving)
    out = tmp_path / "cli.mp4"
    result = CliRunner().invoke(app, ["animate", "--reference", str(ref), "--driving", str(drv),
                                      "--out", str(out), "--url", server.grpc_url])
    assert result.exit_code == 0 and "wrote" in result.output, result.output
    assert read_video(out).num_frames == 17


def server_memory(served: Served) -> tuple[list[int], int, dict[str, int]]:
    """The server's processes (pids), their total resident memory, and the size of each
    Python-backend shared-memory region they map (one per model instance: it grows when the
    tensors that requests leave alive outgrow it, and never shrinks)."""
    family = served.family()
    regions = {m.path for p in family for m in p.memory_maps()
               if "triton_python_backend_shm_region" in m.path}
    return (sorted(p.pid for p in family), sum(p.memory_info().rss for p in family),
            {path: os.stat(path).st_size for path in regions})


def test_bad_inputs_get_invalid_argument_and_the_server_keeps_serving(server, inputs):
    settings = server.settings
    reference, driving, clip = inputs
    half = driving[:len(driving) // 2]
    cases = bad_requests(reference, driving, clip.frames, clip.fps,
                         settings.serve.max_image_side)
    memory = []
    for _ in range(4):  # the same bad requests again and again: no instance dies or grows
        for case, (image, video, prompt, message) in cases.items():
            with pytest.raises(InferenceServerException) as err:
                raw_request(server.grpc_url, image, video, prompt)
            assert "INVALID_ARGUMENT" in str(err.value.status()), (case, err.value)
            assert message in err.value.message(), (case, err.value.message())
        memory.append(server_memory(server))
    assert memory[3][0] == memory[0][0], "a model instance was restarted"
    # After the first round nothing may grow: a failed request's inputs held by a reference
    # cycle grew motion_control's regions (and the RSS of every process mapping them), and
    # freed frames kept in glibc's arenas grew motion_extractor's (serving/backend.py).
    assert memory[3][2] == memory[1][2], "a shared-memory region grew"
    assert memory[3][1] - memory[1][1] < 20 * 1024**2, memory  # bytes of RSS

    with MotionControlClient(server.grpc_url, settings=settings) as client:
        with pytest.raises(InvalidInput, match="driving video"):  # the SDK's typed error
            client.animate(reference, half, "x")
        video = client.animate(reference, driving, "a person walking", seed=1)
    assert read_video(video).num_frames == 17  # still serving
