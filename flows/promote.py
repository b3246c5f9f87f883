"""Prefect flow `promote` (`make promote`, `motionctl promote`): gates, then registry aliases.

A student version becomes `candidate` when it passes every gate of settings.promote, read from
the `eval.<metric>` tags that the evaluate flow puts on each version:
  - student vs its teacher: not worse than `student_tolerance` on each primary metric;
  - candidate vs the current champion: not worse than `champion_tolerance` on each;
  - student vs the static reference (the still photo repeated, on the same benchmark set):
    at least as good on each primary metric (`baseline_gate`, on by default): a model that
    loses to doing nothing is not a release;
  - latency: end-to-end seconds per clip within `latency_budget_s`.
`--to champion` moves `champion` to the candidate (the previous champion is recorded, so
`motionctl promote --rollback` restores it in one command). A refused promotion names each
failed gate and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow

from flows import ui
from flows.errors import MotionControlError
from flows.evaluate import HIGHER_IS_BETTER, STATIC_TAG, tagged_metrics
from flows.registry import alias_version, newest_version, rollback_alias, set_alias
from flows.settings import STUDENT_MODEL, TEACHER_MODEL, Alias, Settings, get_settings
from flows.tracking import connect


class PromotionRefused(MotionControlError):
    """A gate failed; the message lists every failed gate with its numbers."""


@dataclass
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass
class PromotionResult:
    version: int
    alias: str
    previous: int | None
    gates: list[Gate] = field(default_factory=list)


def version_metrics(settings: Settings, name: str, version: int | str) -> dict[str, float]:
    mv = connect(settings).MlflowClient().get_model_version(name, str(version))
    return tagged_metrics(mv.tags)


def _better_than_static_gate(cfg, mine: dict, static: dict) -> Gate:
    name = "student vs static reference"
    if not static:
        return Gate(name, False, "the static reference's metrics are missing (an evaluation "
                    "older than this gate): run `motionctl evaluate --force`")
    return compare_gate(name, mine, static, cfg.primary_metrics, cfg.baseline_tolerance)


def _worse_by(metric: str, candidate: float, reference: float) -> float:
    """How much worse the candidate is (positive = worse), whichever way the metric goes."""
    return (reference - candidate) if HIGHER_IS_BETTER[metric] else (candidate - reference)


def compare_gate(name: str, candidate: dict, reference: dict, metrics: tuple[str, ...],
                 tolerance: float) -> Gate:
    failures, details = [], []
    for metric in metrics:
        if metric not in candidate or metric not in reference:
            failures.append(f"{metric} missing (evaluate both versions first)")
            continue
        worse = _worse_by(metric, candidate[metric], reference[metric])
        details.append(f"{metric} {candidate[metric]:.4g} vs {reference[metric]:.4g}")
        if worse > tolerance:
            failures.append(f"{metric} {candidate[metric]:.4g} vs {reference[metric]:.4g}: "
                            f"worse by {worse:.4g} > tolerance {tolerance:g}")
    return Gate(name, not failures, "; ".join(failures or details))


def check_gates(settings: Settings, version: int) -> list[Gate]:
    """Every gate of a student version against its teacher and the current champion."""
    cfg = settings.promote
    client = connect(settings).MlflowClient()
    mv = client.get_model_version(STUDENT_MODEL, str(version))
    mine = version_metrics(settings, STUDENT_MODEL, version)
    if not mine:
        raise PromotionRefused(f"{STUDENT_MODEL} version {version} has no evaluation; run "
                               f"`make evaluate` (motionctl evaluate --student-version "
                               f"{version}) first")
    gates = []
    teacher = mv.tags.get("teacher_version")
    if teacher:
        gates.append(compare_gate(f"student vs teacher v{teacher}", mine,
                                  version_metrics(settings, TEACHER_MODEL, teacher),
                                  cfg.primary_metrics, cfg.student_tolerance))
    if cfg.baseline_gate:
        gates.append(_better_than_static_gate(cfg, mine, tagged_metrics(mv.tags, STATIC_TAG)))
    champion = alias_version(settings, STUDENT_MODEL, "champion")
    if champion is not None and champion != version:
        gates.append(compare_gate(f"candidate vs champion v{champion}", mine,
                                  version_metrics(settings, STUDENT_MODEL, champion),
                                  cfg.primary_metrics, cfg.champion_tolerance))
    latency = mine.get("latency_s")
    gates.append(Gate("latency budget", latency is not None and latency <= cfg.latency_budget_s,
                      f"latency_s {latency if latency is None else f'{latency:.3g}'} vs budget "
                      f"{cfg.latency_budget_s:g} s"))
    return gates


def run_promotion(settings: Settings, version: int | None = None, to: Alias = "candidate",
                  rollback: bool = False) -> PromotionResult:
    if rollback:
        previous = alias_version(settings, STUDENT_MODEL, to)
        restored = rollback_alias(settings, STUDENT_MODEL, to)
        ui.say(f"{STUDENT_MODEL}@{to}: rolled back from version {previous} to {restored}")
        return PromotionResult(restored, to, previous)
    pick_version(settings, version, to)  # nothing to promote fails in one line, before Prefect
    return promote_flow(version=version, to=to)


def pick_version(settings: Settings, version: int | None, to: str) -> int:
    """`version`, else the newest few-step student (to candidate) or the candidate (to
    champion)."""
    if version is None:
        version = alias_version(settings, STUDENT_MODEL, "candidate") if to == "champion" \
            else newest_version(settings, STUDENT_MODEL, distill_stage="steps")
        if version is None:
            raise MotionControlError(f"no {STUDENT_MODEL} version to promote: "
                                     + ("promote one to candidate first (make promote)"
                                        if to == "champion" else "run make distill first"))
    return version


@flow(name="promote")
def promote_flow(version: int | None = None, to: Alias = "candidate") -> PromotionResult:
    """Move alias `to` to a student version (default: the newest few-step student to
    candidate, the candidate to champion) if it passes every gate."""
    settings = get_settings()
    version = pick_version(settings, version, to)
    gates = check_gates(settings, version)
    for gate in gates:
        ui.say(f"  [{'pass' if gate.passed else 'FAIL'}] {gate.name}: {gate.detail}")
    failed = [g for g in gates if not g.passed]
    decision = (f"{STUDENT_MODEL} version {version} not promoted to {to}: " + " | ".join(
        f"{g.name}: {g.detail}" for g in failed)) if failed else \
        f"{STUDENT_MODEL}@{to} -> version {version}"
    ui.table("promotion-gates", [{"gate": g.name, "result": "pass" if g.passed else "FAIL",
                                  "numbers": g.detail} for g in gates], decision)
    if failed:
        raise PromotionRefused(decision)
    previous = set_alias(settings, STUDENT_MODEL, to, version)
    ui.say(decision + (f" (was {previous}; `motionctl promote --rollback --to {to}` restores it)"
                    if previous is not None and previous != version else ""))
    return PromotionResult(version, to, previous, gates)
