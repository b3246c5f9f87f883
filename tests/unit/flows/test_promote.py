"""Promotion gates and rollback on an embedded MLflow registry (SQLite).

The versions are registry entries with `eval.*` tags as the evaluate flow writes them; no
model weights are involved because the gates read only the registry."""

import contextlib

import pytest

from flows import tracking
from flows.promote import PromotionRefused, run_promotion
from flows.registry import alias_version
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, get_settings, load_settings

STATIC = {"pose_pck": 0.42, "ssim": 0.66}  # the static reference on the benchmark set


def register(settings, name: str, metrics: dict, static: dict | None = None, **tags) -> int:
    client = tracking.connect(settings).MlflowClient()
    with contextlib.suppress(Exception):  # already registered
        client.create_registered_model(name)
    static = STATIC if static is None and metrics else static or {}
    tags = {**{f"eval.{k}": str(v) for k, v in metrics.items()},
            **{f"eval.static.{k}": str(v) for k, v in static.items()}, **tags}
    return int(client.create_model_version(name, source="file:///nowhere", tags=tags).version)


def newest_artifact(key: str) -> list[dict]:
    """The rows of the newest table artifact `key` on this process's Prefect server (the
    temporary one the flows ran on)."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


@pytest.fixture
def registry():
    settings = load_settings()
    teacher = register(settings, TEACHER_MODEL, {"pose_pck": 0.60, "ssim": 0.70,
                                                 "latency_s": 9.0})
    good = register(settings, STUDENT_MODEL, {"pose_pck": 0.58, "ssim": 0.69, "latency_s": 2.0},
                    teacher_version=str(teacher), distill_stage="steps")
    return settings, teacher, good


def test_a_good_student_becomes_candidate_then_champion(registry):
    settings, _, good = registry
    result = run_promotion(settings, good)
    assert result.alias == "candidate" and all(g.passed for g in result.gates)
    run_promotion(settings, to="champion")
    assert alias_version(settings, STUDENT_MODEL, "champion") == good


def test_a_worse_model_is_refused_with_the_failed_gate_and_rollback_restores(registry):
    settings, teacher, good = registry
    run_promotion(settings, good, to="champion")
    worse = register(settings, STUDENT_MODEL, {"pose_pck": 0.40, "ssim": 0.69, "latency_s": 2.0},
                     teacher_version=str(teacher), distill_stage="steps")
    with pytest.raises(PromotionRefused) as refused:
        run_promotion(settings, worse, to="champion")
    message = str(refused.value)
    assert "student vs teacher" in message and "pose_pck 0.4 vs 0.6" in message
    assert "worse by 0.2" in message and "champion v" in message
    assert alias_version(settings, STUDENT_MODEL, "champion") == good  # untouched
    # the decision and each gate's numbers, as the Prefect UI shows them on the flow run
    gates = {row["gate"]: row for row in newest_artifact("promotion-gates")}
    assert gates["student vs teacher v1"]["result"] == "FAIL"
    assert "pose_pck 0.4 vs 0.6" in gates["student vs teacher v1"]["numbers"]
    assert gates["latency budget"]["result"] == "pass"

    # a release that passed the gates, then turned out bad in production: roll it back
    newer = register(settings, STUDENT_MODEL, {"pose_pck": 0.59, "ssim": 0.70, "latency_s": 2.0},
                     teacher_version=str(teacher), distill_stage="steps")
    run_promotion(settings, newer, to="champion")
    assert alias_version(settings, STUDENT_MODEL, "champion") == newer
    restored = run_promotion(settings, to="champion", rollback=True)
    assert restored.version == good
    assert alias_version(settings, STUDENT_MODEL, "champion") == good


def test_latency_budget_and_missing_evaluation(registry, monkeypatch):
    settings, teacher, _ = registry
    slow = register(settings, STUDENT_MODEL, {"pose_pck": 0.6, "ssim": 0.7, "latency_s": 99.0},
                    teacher_version=str(teacher))
    with pytest.raises(PromotionRefused, match="latency budget: latency_s 99"):
        run_promotion(settings, slow)
    unevaluated = register(settings, STUDENT_MODEL, {})
    with pytest.raises(PromotionRefused, match="no evaluation; run `make evaluate`"):
        run_promotion(settings, unevaluated)


def test_a_model_below_the_static_reference_is_refused(registry, monkeypatch):
    settings, teacher, _ = registry
    # as good as its teacher, but the still photo scores more on pose: doing nothing wins
    teacher_like = register(settings, TEACHER_MODEL, {"pose_pck": 0.30, "ssim": 0.70})
    blur = register(settings, STUDENT_MODEL, {"pose_pck": 0.30, "ssim": 0.70, "latency_s": 2.0},
                    teacher_version=str(teacher_like), distill_stage="steps")
    with pytest.raises(PromotionRefused) as refused:
        run_promotion(settings, blur)
    message = str(refused.value)
    assert "student vs static reference" in message and "pose_pck 0.3 vs 0.42" in message
    assert "student vs teacher" not in message  # that gate passed
    # an evaluation from before the gate carries no static figures: evaluate again
    old = register(settings, STUDENT_MODEL, {"pose_pck": 0.6, "ssim": 0.7, "latency_s": 2.0},
                   static={}, teacher_version=str(teacher), distill_stage="steps")
    with pytest.raises(PromotionRefused, match="motionctl evaluate --force"):
        run_promotion(settings, old)
    # an operator may switch the gate off (MC_PROMOTE__BASELINE_GATE=false)
    monkeypatch.setenv("MC_PROMOTE__BASELINE_GATE", "false")
    get_settings.cache_clear()
    try:
        assert run_promotion(load_settings(), blur).version == blur
    finally:
        monkeypatch.delenv("MC_PROMOTE__BASELINE_GATE")
        get_settings.cache_clear()
