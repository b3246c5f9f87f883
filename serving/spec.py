"""The Triton models of the repository and their tensors: one table that the repository
builder writes as config.pbtxt and that the models use for names (light: numpy only, so
the BLS orchestrator's process stays small).

    motion_control    BLS entry point (docs/architecture.md section 4): checks the request, then runs
                      motion_extractor, identity_encoder and prompt_enhancer side by side,
                      then student_dit; answers with one mp4
    motion_control_stream
                      the same, decoupled (gRPC streaming): answers with progress and each
                      part's finished frames as student_dit makes them, for long clips
    motion_extractor  decord decode + MediaPipe holistic + retargeting + intensity
    identity_encoder  reference + subject library decode, squaring, dlib identity embedding
    prompt_enhancer   SmolLM2 rewrite of the user's words + the camera move they name
    student_dit       caption (+ motion context) and camera path, conditions, anchored
                      long-video sampling, VAE decode, watermark;
                      decoupled: one response per sampler call (progress, finished frames)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ENTRY = "motion_control"
STREAM_ENTRY = "motion_control_stream"

# A BLS response reaches the caller with code INTERNAL whatever the called model answered
# (Triton 2.51), so the models of the pipeline mark the message of a bad input; so does the
# streaming entry, whose errors reach a gRPC client as a message without a status code.
INVALID_MARK = "[invalid input] "

# A model's server fault is raised out of `execute` (serving/backend.py), and Triton wraps
# its message: "Failed to process the request(s) for model 'student_dit_0_0', message:
# ServerFault: <ours>" plus the stub's traceback after a blank line.
_TRITON_WRAPPING = re.compile(r"Failed to process the request\(s\) for model '[^']*', "
                              r"message: ServerFault: ")


def fault_message(message: str) -> str:
    """The message of a server fault without Triton's wrapping and traceback: one line."""
    return _TRITON_WRAPPING.sub("", message.split("\n\nAt:")[0]).strip()


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton data type without the TYPE_ prefix: STRING, FP32, INT64, ...
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    gpu: bool = False  # gets KIND_GPU instances when MC_SERVE__GPU_INSTANCES > 0
    source: str = ""  # serving/triton_models/<source>.py, copied as <name>/1/model.py
    instances: str = "cpu_instances"  # the ServeSettings field with its KIND_CPU count
    decoupled: bool = False  # answers a request with any number of responses (streaming)
    parameters: dict[str, str] = field(default_factory=dict)

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def _t(name: str, dtype: str, *dims: int, optional: bool = False) -> TensorSpec:
    return TensorSpec(name, dtype, dims, optional)


KEYPOINTS = (-1, 133, 4)
# the reference's own keypoints: what a model starting from the warped reference warps from
REFERENCE_KEYPOINTS = _t("REFERENCE_KEYPOINTS", "FP32", 133, 4)
REFERENCE_IMAGE = _t("REFERENCE_IMAGE", "STRING", 1)
DRIVING_VIDEO = _t("DRIVING_VIDEO", "STRING", 1)
SUBJECT_LIBRARY = _t("SUBJECT_LIBRARY", "STRING", -1, optional=True)
MOTION_INTENSITY = _t("MOTION_INTENSITY", "FP32", 1)
ACTION_PHRASE = _t("ACTION_PHRASE", "STRING", 1)
ENHANCED_PROMPT = _t("ENHANCED_PROMPT", "STRING", 1)  # the user's words, rewritten
CAMERA_MOVE = _t("CAMERA_MOVE", "STRING", 1)  # a key of models.synthetic.camera.MOVES

# What an entry point takes, and what a streamed part carries: the progress of generation
# (sampler calls done, of the total), the frames it finished (upscaled and watermarked; none
# while keyframes are generated), the clip's frame rate and the provenance tags for the mp4.
ENTRY_INPUTS = (REFERENCE_IMAGE, DRIVING_VIDEO, _t("PROMPT", "STRING", 1), SUBJECT_LIBRARY,
                _t("SEED", "INT64", 1, optional=True),
                _t("MOTION_INTENSITY", "FP32", 1, optional=True))
FRAMES = _t("FRAMES", "UINT8", -1, -1, -1, 3)
PROGRESS = _t("PROGRESS", "INT32", 2)
PROVENANCE = _t("PROVENANCE", "STRING", 1)  # JSON of the mp4's container tags
FPS = _t("FPS", "FP32", 1)

MODELS = {spec.name: spec for spec in (
    ModelSpec(
        ENTRY, inputs=ENTRY_INPUTS, outputs=(_t("VIDEO", "STRING", 1),),
        source="motion_control", instances="orchestrator_instances"),
    ModelSpec(
        STREAM_ENTRY, inputs=ENTRY_INPUTS, outputs=(PROGRESS, FRAMES, FPS, PROVENANCE),
        source="motion_control", instances="orchestrator_instances", decoupled=True),
    ModelSpec(
        "motion_extractor",
        inputs=(REFERENCE_IMAGE, DRIVING_VIDEO),
        outputs=(_t("POSE", "FP32", *KEYPOINTS), _t("DRIVER_KEYPOINTS", "FP32", *KEYPOINTS),
                 REFERENCE_KEYPOINTS, MOTION_INTENSITY, ACTION_PHRASE, FPS),
        source="motion_extractor"),  # MediaPipe's legacy solutions run on the CPU
    ModelSpec(
        "identity_encoder",
        inputs=(REFERENCE_IMAGE, SUBJECT_LIBRARY),
        outputs=(_t("REFERENCE", "UINT8", -1, -1, 3), _t("LIBRARY", "UINT8", -1, -1, -1, 3),
                 _t("IDENTITY", "FP32", 128), _t("IDENTITY_VALID", "BOOL", 1)),
        source="identity_encoder"),
    ModelSpec(  # needs no motion, so it runs beside motion_extractor
        "prompt_enhancer",
        inputs=(_t("PROMPT", "STRING", 1),),
        outputs=(ENHANCED_PROMPT, CAMERA_MOVE, _t("PROMPT_SOURCE", "STRING", 1)),
        source="prompt_enhancer"),
    ModelSpec(
        "student_dit",
        inputs=(_t("POSE", "FP32", *KEYPOINTS), _t("DRIVER_KEYPOINTS", "FP32", *KEYPOINTS),
                REFERENCE_KEYPOINTS, MOTION_INTENSITY, ACTION_PHRASE,
                _t("REFERENCE", "UINT8", -1, -1, 3), _t("LIBRARY", "UINT8", -1, -1, -1, 3),
                _t("IDENTITY", "FP32", 128), _t("IDENTITY_VALID", "BOOL", 1),
                ENHANCED_PROMPT, CAMERA_MOVE, _t("SEED", "INT64", 1)),
        outputs=(PROGRESS, FRAMES, PROVENANCE),
        gpu=True, source="student_dit", decoupled=True),
)}
