"""The one settings object of the platform.

Every entry point (the `motionctl` CLI, Prefect flows, Triton model code, tests) reads its
configuration through `get_settings()`. Values come, highest priority first, from keyword
arguments, `MC_*` environment variables, a `.env` file in the working directory, files in a
mounted secrets folder (`MC_SECRETS_DIR`, Kubernetes style: one file per field), and the
defaults below.

`profile` picks the size of everything: `debug` for tests, `tiny` on a laptop CPU in minutes,
`small` on one GPU, `base` on a cluster; flows/profiles.py holds each one's run config.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.errors import InvalidSettings
from models.curation import CurationThresholds
from models.video import VideoLimits

REPO_ROOT = Path(__file__).resolve().parent.parent

Profile = Literal["debug", "tiny", "small", "base"]  # flows/profiles.py
StoreBackend = Literal["local", "s3"]

EXPERIMENTS = ("curation", "teacher", "distillation", "evaluation", "pipeline")
TEACHER_MODEL = "motioncontrol-teacher"
STUDENT_MODEL = "motioncontrol-student"
Alias = Literal["candidate", "champion"]  # the registry aliases a student is promoted to
ALIASES = get_args(Alias)


def _secrets_dir() -> str | None:
    # Kubernetes mounts a Secret as a folder of files; only read it when it exists.
    path = os.environ.get("MC_SECRETS_DIR", "/run/secrets/motioncontrol")
    return path if Path(path).is_dir() else None


class CurateSettings(BaseModel):
    """What `make curate` builds. Unset clip sizes come from the profile (flows/profiles.py)."""

    dataset: str = "motion"
    clip_size: int | None = Field(default=None, ge=32, le=1024)
    clip_frames: int | None = Field(default=None, ge=2, le=512)
    clip_fps: float | None = Field(default=None, gt=0, le=120)
    characters: int = Field(default=24, ge=1, description="training characters")
    characters_per_motion: int = Field(default=3, ge=1, description="cross-identity group")
    motion_seeds: int = Field(default=2, ge=1, description="variants of each action")
    actions: tuple[str, ...] | None = Field(default=None, description="unset: every action")
    intensities: tuple[float, ...] = (0.5, 0.9)
    mocap_windows: int = Field(default=4, ge=0, description="windows per BVH file")
    heldout_characters: int = Field(default=4, ge=1, description="evaluation characters")
    heldout_actions: int = Field(default=10, ge=0, description="eval groups from actions")
    videos: str | None = Field(
        default=None,
        description="real videos: a local folder, or 'store:<prefix>' in the object store; "
        "unset: the bundled sample (vtest.avi)",
    )
    video_windows: int = Field(default=4, ge=0, description="windows per video")
    workers: int = Field(default=2, ge=1, le=64,
                         description="workers per stage of the Ray pipeline (and the local "
                         "Ray's CPUs)")
    pools: dict[str, int] = Field(
        default_factory=dict,
        description="workers of one stage instead of `workers`, e.g. {\"identity\": 8} "
        "(stages: source, extract, identity, score)")
    ray_address: str | None = Field(
        default=None,
        description="a running Ray cluster (ray://host:10001); unset: RAY_ADDRESS, else a "
        "local Ray started for the run")
    ray_object_store_mb: int = Field(default=1024, ge=64,
                                     description="shared memory of the local Ray")
    shard_mb: int = Field(default=256, ge=1, le=4096)


class TrainSettings(BaseModel):
    """Overrides of the profile's run config (flows/profiles.py); unset = the profile's."""

    steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    val_every: int | None = Field(default=None, ge=1)
    sample_every: int | None = Field(default=None, ge=1)
    sample_steps: int | None = Field(default=None, ge=1)
    nproc: int | None = Field(default=None, ge=1, le=64,
                              description="worker processes (torchrun); unset: `default_nproc`")
    # One intra-op thread per worker: on a small shared CPU more threads thrash (measured
    # 0.13 s vs several seconds per tiny DiT step when another process is busy).
    threads: int = Field(default=1, ge=1, le=256, description="torch threads per worker")
    loader_workers: int = Field(default=1, ge=0, le=64,
                                description="DataLoader processes per rank that prepare the "
                                "conditions while the model trains; 0: in the rank itself")
    launcher: Literal["local", "kubernetes"] | None = Field(
        default=None, description="unset: kubernetes on the base profile, else local")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where each rank trains: auto = one GPU per rank (NCCL) "
        "when torch sees CUDA, else the CPU (gloo)")
    wan_weights: str | None = Field(
        default=None, description="the base profile's pretrained Wan2.x weights, diffusers "
        "layout (transformer/, vae/, text_encoder/, tokenizer/): a local folder, or "
        "`store:<prefix>` in the object store")


class EvaluateSettings(BaseModel):
    """The benchmark set of `make evaluate` (flows/evaluate.py). MC_EVALUATE__<FIELD>."""

    pairs: int = Field(default=8, ge=1, le=1000,
                       description="held-out cross-identity pairs, one per motion first")
    real_clips: int = Field(default=2, ge=0, le=2,
                            description="real photo x real footage clips: the astronaut, "
                            "then a basketball player")
    teacher_steps: int | None = Field(default=None, ge=1, le=1000,
                                      description="Euler steps of a teacher (its CFG in 2 "
                                      "branches); unset: the teacher's own (its profile's)")
    lpips_weights: Path | None = Field(default=None, description="LPIPS-VGG weights "
                                       "(safetensors, models/lpips.py); unset: the file "
                                       "`make setup` converts (<venv>/assets/lpips)")
    gsb_ratings: Path | None = Field(default=None, description="folder of GSB ratings files "
                                     "(downloads of the run's gsb/index.html): their scores are "
                                     "logged with the student's evaluation")


class PromoteSettings(BaseModel):
    """Gates of `make promote` (flows/promote.py). MC_PROMOTE__<FIELD>."""

    primary_metrics: tuple[str, ...] = ("pose_pck", "ssim")
    # student vs its teacher: at most this much worse (absolute) on each primary metric
    student_tolerance: float = Field(default=0.05, ge=0)
    # candidate vs the current champion: at most this much worse on each primary metric
    champion_tolerance: float = Field(default=0.02, ge=0)
    # student vs the static reference on the same benchmark set: at most this much worse
    baseline_gate: bool = Field(default=True, description="refuse a model that loses to the "
                                "static reference on a primary metric")
    baseline_tolerance: float = Field(default=0.0, ge=0)
    latency_budget_s: float = Field(default=30.0, gt=0,
                                    description="end-to-end seconds per clip, CPU tiny profile")


class ClientSettings(BaseModel):
    """How the SDK and `motionctl animate` reach a server: the local one by default, or a
    cluster's gateway over TLS with a bearer token. MC_CLIENT__<FIELD>."""

    url: str | None = Field(default=None, description="gRPC HOST:PORT of the server or the "
                            "cluster's gateway; unset: the local server (MC_TRITON_*)")
    tls: bool = Field(default=False, description="TLS to the server (on by itself when a "
                      "certificate is given)")
    ca_cert: Path | None = Field(default=None, description="PEM of the CA that signed the "
                                 "server's certificate; unset: the system's roots")
    client_cert: Path | None = Field(default=None, description="PEM client certificate, for "
                                     "a gateway that asks for one (mutual TLS)")
    client_key: Path | None = Field(default=None, description="PEM key of client_cert")
    token: SecretStr | None = Field(default=None, description="sent as `authorization: Bearer "
                                    "<token>` with every call")
    # A gateway reads `authorization`. tritonserver's own check (--grpc-restricted-protocol=
    # <protocols>:<key>=<value>) reads the header `triton-grpc-protocol-<key>`.
    token_header: str = Field(default="authorization", pattern=r"^[a-z0-9-]+$",
                              description="the header the bearer token travels in")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> ClientSettings:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give MC_CLIENT__CLIENT_CERT and MC_CLIENT__CLIENT_KEY together")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_cert is not None or self.client_cert is not None


class KubernetesSettings(BaseModel):
    """The cluster side (`deploy/`): where the charts live, how a canary advances and when it
    is rolled back, and the multi-node training job of the `base` profile. MC_KUBE__<FIELD>."""

    context: str | None = Field(default=None, description="kubeconfig context; unset: current "
                                "context, or the in-cluster service account")
    namespace: str = Field(default="motioncontrol", min_length=1, max_length=63)
    release: str = Field(default="motioncontrol", min_length=1, max_length=53,
                         description="Helm release of the serving chart")
    image: str = Field(default="ghcr.io/motioncontrol/motioncontrol:0.1.0",
                       description="the platform image the training pods run")
    s3_secret: str = Field(default="motioncontrol-s3", description="Secret with "
                           "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the pods")
    values_file: Path | None = Field(default=None, description="extra values of the serving "
                                     "chart for its first install (later: the release's own)")
    training_queue: str = Field(default="training", description="Kueue LocalQueue of the "
                                "training jobs")
    nodes: int = Field(default=2, ge=1, le=256, description="training nodes (pods)")
    gpus_per_node: int = Field(default=8, ge=1, le=16)
    job_timeout_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    poll_s: float = Field(default=10.0, gt=0, description="how often a training job or a "
                          "Rollout is read while followed")
    rollout_timeout_s: float = Field(default=4 * 3600.0, gt=0, description="`motionctl canary` "
                                     "stops following a Rollout after this (it carries on)")
    prometheus_url: str = Field(default="http://prometheus-operated.monitoring:9090")
    probe_url: str | None = Field(default=None, description="Triton HTTP URL of the canary for "
                                  "the probe; unset: its in-cluster Service")
    # Without Argo Rollouts (the chart's rollouts.enabled=false) `motionctl canary` steps the
    # tracks itself with these; with it, the chart's values `rollouts.*` say the same.
    canary_weights: tuple[int, ...] = Field(default=(10, 50, 100), min_length=1,
                                            description="canary traffic %, step by step")
    step_wait_s: float = Field(default=300.0, ge=0, description="soak time before each analysis")
    analysis_window: str = Field(default="5m", pattern=r"^[0-9]+[smh]$",
                                 description="PromQL range of each analysis")
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_latency_ms: float = Field(default=30000.0, gt=0)
    min_requests: int = Field(default=20, ge=0, description="fewer in the window: no verdict, "
                              "roll back")

    @field_validator("canary_weights", mode="after")
    @classmethod
    def _weights_rise_to_100(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 < w <= 100 for w in v) or list(v) != sorted(set(v)) or v[-1] != 100:
            raise ValueError("give rising percentages in 1..100 that end at 100, e.g. [10,50,100]")
        return v


class ServeSettings(BaseModel):
    """Serving: the limits every request is checked against at the server edge (a request
    over any of them gets INVALID_ARGUMENT saying which), and how the Triton models run."""

    max_image_bytes: int = Field(default=20 * 1024**2, ge=1, description="reference/library image")
    max_image_side: int = Field(default=4096, ge=16, le=16384)
    max_video_bytes: int = Field(default=100 * 1024**2, ge=1)
    max_video_side: int = Field(default=2048, ge=16, le=16384)
    max_duration_s: float = Field(default=60.0, gt=0, description="longest driving video")
    max_frames: int = Field(default=1200, ge=1, description="most driving frames")
    max_subject_library: int = Field(default=8, ge=0, description="extra references")
    max_prompt_chars: int = Field(default=2000, ge=1)
    max_motion_intensity: float = Field(default=1.0, gt=0)
    # gRPC messages carry whole uploads; the client refuses a request above this.
    max_message_mb: int = Field(default=256, ge=4, le=2047)
    output_size: int = Field(default=256, ge=256, le=2048,
                             description="output side: >= 256 for the DWT-DCT watermark")
    window_overlap: int = Field(default=1, ge=1, description="frames shared by long-video windows (1 + 4j)")
    window_batch: int = Field(default=8, ge=1, le=256, description="windows per sampler call")
    prompt_max_new_tokens: int = Field(default=48, ge=8, le=512)
    cpu_instances: int = Field(default=1, ge=0, le=64, description="KIND_CPU instances per model")
    orchestrator_instances: int = Field(default=4, ge=1, le=64, description="motion_control "
                                        "instances: requests in flight through the pipeline")
    gpu_instances: int = Field(default=0, ge=0, le=64, description="KIND_GPU instances of "
                               "student_dit (sampling on the GPU); 0 on a CPU host")
    # One intra-op thread per model process, as for training: the models run side by side
    # and on a small shared CPU more threads thrash (measured: the tiny DiT 6.5 s with 2
    # threads vs 0.3 s with 1 while another process was busy).
    torch_threads: int = Field(default=1, ge=1, le=256, description="threads per model process")
    # The VAE decode is most of a student's request at `small` shapes; bfloat16 halves it
    # where the hardware computes bf16 natively (auto), at ~1/255 mean difference per pixel.
    decode_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="VAE decode precision of student_dit")
    startup_timeout_s: float = Field(default=300.0, gt=0, description="until tritonserver is ready")
    request_timeout_s: float = Field(default=600.0, gt=0, description="client deadline")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MC_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    # --- where and how big -------------------------------------------------------------
    profile: Profile = "tiny"
    home: Path = Field(
        default=REPO_ROOT / ".local",
        description="All local state: mlflow.db, mlartifacts/, store/, prefect/, triton/, stack/.",
    )
    seed: int = Field(default=0, ge=0)
    run_config: FilePath | None = Field(
        default=None, description="a TOML or JSON file of run-config overrides (the fields of "
        "flows/profiles.py RunConfig, nested) applied on top of the profile")

    # --- object store -------------------------------------------------------------------
    store_backend: StoreBackend = "local"
    s3_endpoint: str | None = Field(default=None, description="host:port of MinIO/S3, no scheme")
    s3_bucket: str = Field(default="motioncontrol", min_length=3, max_length=63)
    s3_secure: bool = False
    s3_region: str | None = None
    # Credentials: only from env (MC_* or the usual AWS names) or the mounted secrets folder;
    # SecretStr keeps them out of reprs, logs and MLflow params.
    s3_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MC_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MC_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    store_part_size_mb: int = Field(default=16, ge=5, le=5120, description="S3 multipart size")

    # --- tracking and orchestration -----------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="Explicit MLflow URI. Unset: the local stack's server when it is up, "
        "else SQLite under home.",
    )
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    prefect_api_url: str | None = Field(
        default=None,
        description="Explicit Prefect API URL. Unset: the local stack's server when it is "
        "up, else Prefect's temporary local server.",
    )
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    prefect_worker_port: int = Field(default=4201, ge=1, le=65535,
                                     description="health port of the local stack's Prefect "
                                     "worker (work pool `local`)")
    stack_host: str = "127.0.0.1"
    stack_timeout_s: float = Field(default=120.0, gt=0)

    # --- data ---------------------------------------------------------------------------
    # Nested groups: set one field with MC_<GROUP>__<FIELD>, e.g. MC_VIDEO__MAX_SIDE=2048,
    # MC_CURATION__MIN_SHARPNESS=0.8, MC_CURATE__CHARACTERS=8.
    video: VideoLimits = VideoLimits()
    curation: CurationThresholds = CurationThresholds()
    curate: CurateSettings = CurateSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()  # MC_EVALUATE__*: the benchmark set
    promote: PromoteSettings = PromoteSettings()  # MC_PROMOTE__*: promotion gates
    kube: KubernetesSettings = KubernetesSettings()  # MC_KUBE__*: cluster, canary, training job

    # --- serving ------------------------------------------------------------------------
    triton_host: str = "127.0.0.1"
    triton_http_port: int = Field(default=8000, ge=1, le=65535)
    triton_grpc_port: int = Field(default=8001, ge=1, le=65535)
    triton_metrics_port: int = Field(default=8002, ge=1, le=65535)
    serve: ServeSettings = ServeSettings()
    client: ClientSettings = ClientSettings()  # MC_CLIENT__*: TLS and auth towards a cluster

    @field_validator("video", "curation", mode="before")
    @classmethod
    def _json_in_dataclass_groups(cls, v):
        # pydantic-settings decodes JSON values (MC_CURATION__INTENSITY_LEVELS='[0.002, 0.01]')
        # only inside BaseModel groups; these two are dataclasses of models/.
        if isinstance(v, dict):
            return {k: json.loads(x) if isinstance(x, str) and x[:1] in "[{" else x
                    for k, x in v.items()}
        return v

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("s3_endpoint", mode="after")
    @classmethod
    def _endpoint_without_scheme(cls, v: str | None) -> str | None:
        if v and "://" in v:
            raise ValueError("give host:port without a scheme; use MC_S3_SECURE for https")
        return v or None

    # --- derived paths (one place, so every layer agrees) -------------------------------
    @property
    def store_root(self) -> Path:
        return self.home / "store"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def triton_home(self) -> Path:
        return self.home / "triton"

    @property
    def triton_grpc_address(self) -> str:
        """HOST:PORT of the local tritonserver's gRPC endpoint (what clients dial)."""
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_metrics_url(self) -> str:
        return f"http://{self.triton_host}:{self.triton_metrics_port}/metrics"

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"

    def public_dict(self) -> dict[str, str]:
        """Flat settings safe to log (MLflow params, terminal tables): secrets are masked."""
        out = {}

        def add(prefix: str, value) -> None:
            if isinstance(value, dict):  # nested group: one entry per field
                for key, inner in value.items():
                    add(f"{prefix}.{key}", inner)
                return
            if isinstance(value, SecretStr):
                value = "***" if value.get_secret_value() else ""
            out[prefix] = "" if value is None else str(value)

        for name, value in self.model_dump().items():
            add(name, value)
        return out


def load_settings(**overrides) -> Settings:
    """Build settings, turning pydantic's error into one line per bad field."""
    try:
        return Settings(_secrets_dir=_secrets_dir(), **overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = "__".join(str(p) for p in err["loc"]) or "?"
            env = field.upper() if field.upper().startswith(("MC_", "AWS_")) else f"MC_{field.upper()}"
            lines.append(f"{env}: {err['msg']} (got {err.get('input')!r})")
        raise InvalidSettings("invalid settings: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; call `get_settings.cache_clear()` after changing env."""
    return load_settings()
