"""Smoke tests of the built images (`make test-images`: builds them first with `make images`).

Not part of `make test`: a cold build downloads ~3 GB of wheels and takes tens of minutes.
Each test runs a command inside an image with `buildah run --isolation chroot` (the only way
to run a container on the project's CI machine: `podman run` is refused there), on the host's
network, so a server started inside answers on this machine's loopback.

- serving image: tritonserver serves a repository built from a registered tiny student (its
  weights untrained: the image is under test, not the video) and answers a real request over
  gRPC with a watermarked mp4, and a bad one with INVALID_ARGUMENT; the rollout probe
  (`python -m serving.probe`) runs inside it;
- platform image: `motionctl doctor` passes, and a tiny dataset is curated and one training
  step of the video VAE runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from flows.registry import load_bundle
from flows.settings import STUDENT_MODEL, load_settings
from flows.stack import is_healthy
from models.assets import sample_data
from models.video import encode_mp4, read_video
from serving.client import verify
from serving.repository import build_repository
from tests.conftest import free_port
from tests.integration.conftest import SMALL
from tests.tiny_models import publish_tiny_student

VERSION = "0.1.0"  # pyproject.toml; the CPU variant's tag adds -cpu
REGISTRY = os.environ.get("IMAGE_REGISTRY", "ghcr.io/motioncontrol")
TAG = os.environ.get("IMAGE_TAG", f"{VERSION}-cpu")
PLATFORM = f"{REGISTRY}/motioncontrol:{TAG}"
SERVING = f"{REGISTRY}/motioncontrol-serving:{TAG}"


def _image_exists(name: str) -> bool:
    if not shutil.which("buildah"):
        return False
    return subprocess.run(["buildah", "inspect", "--type", "image", name],
                          capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    not (_image_exists(PLATFORM) and _image_exists(SERVING)),
    reason=f"the images {PLATFORM} and {SERVING} are not built here: run `make images` "
           "(or `make test-images`, which builds them first)")


@contextlib.contextmanager
def container(image: str) -> Iterator[str]:
    name = subprocess.run(["buildah", "from", image], capture_output=True, text=True,
                          check=True).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True)


def run_in(name: str, command: list[str], *, env: dict | None = None,
           volumes: dict[Path, str] | None = None, **kwargs) -> list[str]:
    """The argv that runs `command` in working container `name`."""
    # a hostname that resolves: torchrun's rendezvous connects to it (a pod's does)
    args = ["buildah", "run", "--isolation", "chroot", "--hostname", "localhost"]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    for host, inside in (volumes or {}).items():
        args += ["--volume", f"{host}:{inside}"]
    return [*args, name, "--", *command]


def test_the_images_carry_their_labels_and_run_as_a_user():
    for image in (PLATFORM, SERVING):
        info = subprocess.run(["buildah", "inspect", "--type", "image", "--format",
                               "{{.OCIv1.Config.User}} {{index .OCIv1.Config.Labels "
                               "\"org.opencontainers.image.version\"}}", image],
                              capture_output=True, text=True, check=True).stdout.split()
        assert info == ["10001:10001", VERSION], (image, info)


def test_platform_image_passes_doctor_and_trains_a_step(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)  # the image's user (10001) writes here
    env = {"MC_HOME": "/work/home", **SMALL,  # the integration tests' small dataset
           "MC_TRAIN__STEPS": "1", "MC_TRAIN__BATCH_SIZE": "1", "MC_TRAIN__NPROC": "1",
           "MC_TRAIN__SAMPLE_EVERY": "1", "MC_TRAIN__SAMPLE_STEPS": "2", "COLUMNS": "200",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    with container(PLATFORM) as name:
        motionctl = "/opt/venv/bin/motionctl"  # buildah run looks commands up on its own PATH
        for command in ([motionctl, "doctor"], [motionctl, "curate"],
                        [motionctl, "train", "--stage", "0"]):
            proc = subprocess.run(run_in(name, command, env=env,
                                         volumes={home: "/work/home"}),
                                  capture_output=True, text=True, timeout=1200)
            assert proc.returncode == 0, (command, proc.stdout[-3000:], proc.stderr[-3000:])
    assert "motioncontrol-teacher version 1" in proc.stdout, proc.stdout[-2000:]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """tritonserver in the serving image, on a repository built here from a tiny student."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("images-home")
    mp.setenv("MC_HOME", str(home))
    settings = load_settings()
    version, _ = publish_tiny_student(settings)
    repository = build_repository(settings, load_bundle(settings, STUDENT_MODEL,
                                                        alias="champion"), home / "repository")
    for path in [repository, *repository.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    with container(SERVING) as name:
        log = open(home / "tritonserver.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen(run_in(name, [
            "/opt/tritonserver/bin/tritonserver", "--model-repository=/models", "--model-control-mode=none",
            "--strict-readiness=true", "--exit-on-error=true", "--grpc-address=127.0.0.1",
            "--http-address=127.0.0.1", "--metrics-address=127.0.0.1",
            f"--grpc-port={ports['grpc']}", f"--http-port={ports['http']}",
            f"--metrics-port={ports['metrics']}"], volumes={repository: "/models"}),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            ready = f"http://127.0.0.1:{ports['http']}/v2/health/ready"
            while not is_healthy(ready) and process.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(2)
            assert is_healthy(ready), (home / "tritonserver.log").read_text()[-4000:]
            yield f"127.0.0.1:{ports['grpc']}", settings, version
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            process.wait(timeout=60)
            log.close()
            mp.undo()


def test_serving_image_answers_a_request_with_a_watermarked_mp4(served, tmp_path):
    """`motionctl animate`, as a user runs it, against the server inside the image."""
    url, settings, version = served
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=9)
    driving, out = tmp_path / "driving.mp4", tmp_path / "out.mp4"
    driving.write_bytes(encode_mp4(clip.frames, clip.fps))
    proc = subprocess.run([str(Path(sys.executable).parent / "motionctl"), "animate",
                           "--reference", str(sample_data("opencv-doc/basketball1.png")),
                           "--driving", str(driving), "--prompt", "a person walking",
                           "--seed", "1", "--out", str(out), "--url", url],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    video = out.read_bytes()
    assert read_video(video).frames.shape[0] == 9
    assert read_video(video).fps == pytest.approx(clip.fps)
    check = verify(video)
    assert check.watermark.found and check.provenance["version"] == str(version), check


@pytest.mark.parametrize("image", [SERVING, PLATFORM])
def test_the_prompt_enhancer_runs_its_lm_in_the_image(image):
    """llama.cpp loads in the image (a missing runtime library would make the enhancer fall
    back to its plain template, silently) and rewrites a prompt."""
    code = ("from models.prompt import PromptEnhancer; "
            "print(PromptEnhancer().enhance('a knight on a beach', 'waving', 0.01).source)")
    with container(image) as name:
        proc = subprocess.run(run_in(name, ["python", "-c", code]), capture_output=True,
                              text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "lm", proc.stdout + proc.stderr


def test_serving_image_runs_the_rollout_probe(served):
    """The chart's probe Job: `python -m serving.probe` inside the serving image."""
    url, _, _ = served
    with container(SERVING) as name:
        proc = subprocess.run(run_in(name, ["python", "-m", "serving.probe", "--url", url,
                                            "--requests", "2"]),
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"{url}: 2/2 ok, 0 failed"), proc.stdout


def test_serving_image_refuses_a_bad_request_with_invalid_argument(served):
    url, _, _ = served
    client = grpcclient.InferenceServerClient(url)
    tensors = []
    for name, value in (("REFERENCE_IMAGE", b"not an image"), ("DRIVING_VIDEO", b""),
                        ("PROMPT", b"x")):
        tensor = grpcclient.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value], np.object_))
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as err:
        client.infer("motion_control", tensors, client_timeout=120)
    assert "INVALID_ARGUMENT" in str(err.value.status())
