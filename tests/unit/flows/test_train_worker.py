"""The pieces of the training engine that need no model: schedule, plan, checkpoints; and
where a run's models come from."""

import pytest
import torch

from flows.checkpoints import (
    commit_checkpoint,
    download_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    step_tag,
    upload_checkpoint_files,
)
from flows.profiles import profile_config
from flows.registry import build_model, model_meta, model_uri
from flows.settings import STUDENT_MODEL, load_settings
from flows.store import LocalStore
from flows.train_plan import TrainPlan
from flows.train_worker import RUNS, placement, text_encoder_dir, warmup_cosine
from models.text import TextEncoder
from tests.tiny_models import publish_tiny_student


def test_warmup_then_cosine_to_the_floor():
    f = warmup_cosine(warmup=10, total=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_plan_round_trips_through_json():
    run = profile_config("tiny")
    plan = TrainPlan(objective="teacher", stage=2, run_id="abc", dataset="motion",
                     dataset_digest="d1", run=run, model=model_meta(run, "teacher", 2),
                     steps=7, lr=1e-3, batch_size=2, cross_identity=0.5,
                     parent_weights="models:/motioncontrol-teacher/2")
    again = TrainPlan.from_json(plan.to_json())
    assert again == plan and again.run.train.stages[3] == run.train.stages[3]
    assert again.run.dit == run.dit and again.run.vae == run.vae  # tuples survive JSON


@pytest.mark.parametrize("objective", ["vae", "teacher", "guidance", "steps"])
def test_model_meta_rebuilds_the_model_it_describes(objective):
    run = profile_config("debug")
    meta = model_meta(run, objective, 0 if objective == "vae" else 3)
    model = build_model(meta)
    if objective == "vae":
        assert model.config == run.vae
        return
    assert model.config.dim == run.dit.dim and model.stage == 3
    # a student takes its guidance scales as an input; a teacher samples with its profile's
    assert model.config.guidance_embed == (objective != "teacher")
    steps = run.sampling.student_steps if objective == "steps" else run.sampling.teacher_steps
    assert meta["sampler_steps"] == steps
    assert meta["guidance"] == ([run.sampling.text_scale, run.sampling.reference_scale]
                                if objective == "teacher" else [1.0, 1.0])


def test_checkpoints_upload_latest_prune_and_download(tmp_path):
    store = LocalStore(tmp_path / "store")
    for step in (2, 4, 6):
        folder = tmp_path / f"ckpt{step}"
        (folder / "sub").mkdir(parents=True)
        (folder / "model.pt").write_bytes(f"weights at {step}".encode())
        (folder / "sub" / "optim.pt").write_bytes(b"o" * step)
        upload_checkpoint_files(store, "run1", step_tag(step), folder)  # every rank
        commit_checkpoint(store, "run1", step_tag(step), keep=2)  # rank 0, after a barrier
    assert latest_checkpoint(store, "run1") == step_tag(6)
    assert list_checkpoints(store, "run1") == [step_tag(4), step_tag(6)]  # oldest pruned
    got = download_checkpoint(store, "run1", step_tag(6), tmp_path / "dl")
    assert (got / "model.pt").read_bytes() == b"weights at 6"
    assert (got / "sub" / "optim.pt").read_bytes() == b"o" * 6
    assert latest_checkpoint(store, "other") is None


def test_a_run_starts_from_the_registered_models_its_plan_names():
    """The training chain reads its parent, teacher and VAE from registered MLflow models."""
    settings = load_settings()
    version, dit = publish_tiny_student(settings)
    uri = model_uri(STUDENT_MODEL, version=version)
    run = profile_config("tiny")
    plan = TrainPlan(objective="steps", stage=3, run_id="", dataset="motion",
                     dataset_digest="d1", run=run, model=model_meta(run, "steps", 3), steps=1,
                     lr=1e-3, batch_size=1, parent_weights=uri, teacher_weights=uri,
                     vae_weights=uri)
    text_dir = text_encoder_dir(plan, settings)  # the parent version's, fetched once
    assert text_dir.parent == settings.home / "cache" / "text_encoder"
    assert (text_dir / "config.json").is_file() and text_encoder_dir(plan, settings) == text_dir
    model, objective = RUNS["steps"](plan, torch.device("cpu"), TextEncoder(text_dir))
    for name, tensor in dit.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert type(objective.vae).__name__ == "VideoVAE"
    assert objective.text.dim == dit.config.text_dim


def test_placement_cpu_is_gloo_without_bf16():
    where = placement("cpu", bf16=True)
    assert (where.device.type, where.backend, where.bf16) == ("cpu", "gloo", False)
    if not torch.cuda.is_available():  # this machine: auto falls back to the CPU
        assert placement("auto", bf16=True) == where
        with pytest.raises(RuntimeError, match="MC_TRAIN__DEVICE=cuda but torch sees no GPU"):
            placement("cuda", bf16=True)


def test_placement_gpu_is_one_device_per_rank_with_nccl_and_bf16(monkeypatch):
    # STAND-IN: no GPU here; torch's CUDA queries are patched to say one is there.
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    where = placement("auto", bf16=True)
    assert (str(where.device), where.backend, where.bf16, chosen) == ("cuda:3", "nccl", True, [3])
    assert placement("cuda", bf16=False).bf16 is False


def test_bf16_autocast_runs_the_forward_in_bf16_on_the_cpu_too():
    from flows.train_worker import Placement

    layer = torch.nn.Linear(4, 4)
    with Placement(torch.device("cpu"), "gloo", True).autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with Placement(torch.device("cpu"), "gloo", False).autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.float32
