"""`motionctl doctor`: a Prefect flow that checks the platform can do its work here.

It is the smallest real flow of the platform: the object store round-trips a probe object
with its checksum, MLflow has the design's four experiments (created if missing), the
pretrained models that ship inside packages are where the model code will look, and (on
`base`) the Wan2.1 weights the profile starts from are there with its sizes.
"""

from __future__ import annotations

import uuid

from prefect import flow, task

from flows.checks import Check
from flows.errors import MotionControlError
from flows.settings import EXPERIMENTS, get_settings
from flows.store import open_store
from flows.tracking import ensure_experiment, tracking_uri
from models.assets import OFFLINE_MODELS


@task
def check_store() -> Check:
    settings = get_settings()
    try:
        store = open_store(settings)
        key = f"tmp/doctor/{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes * 1024
        store.put_bytes(key, payload)
        ok = store.get_bytes(key) == payload
        store.delete(key)
        return Check("object store", ok and not store.exists(key), store.uri())
    except MotionControlError as exc:
        return Check("object store", False, str(exc))


@task
def check_tracking() -> Check:
    settings = get_settings()
    try:
        ids = [ensure_experiment(settings, name) for name in EXPERIMENTS]
        return Check("mlflow", len(set(ids)) == len(EXPERIMENTS),
                     f"{tracking_uri(settings)} ({', '.join(EXPERIMENTS)})")
    except MotionControlError as exc:
        return Check("mlflow", False, str(exc))


@task
def check_offline_models() -> list[Check]:
    checks = []
    for name, locate in OFFLINE_MODELS.items():
        try:
            checks.append(Check(name, True, str(locate())))
        except FileNotFoundError as exc:
            checks.append(Check(name, False, str(exc)))
    return checks


@task
def check_backbone() -> list[Check]:
    """The profile's pretrained backbone, when it has one (flows/backbone.py)."""
    from flows.backbone import check_wan, uses_backbone, wan_folder
    from flows.profiles import run_config

    settings = get_settings()
    run = run_config(settings)
    if not uses_backbone(run):
        return []
    try:
        folder = wan_folder(settings)
        check_wan(folder, run)
        return [Check("Wan2.x weights", True, str(folder))]
    except MotionControlError as exc:
        return [Check("Wan2.x weights", False, str(exc))]


@flow(name="doctor", log_prints=True)
def doctor_flow() -> list[Check]:
    return [check_store(), check_tracking(), *check_offline_models(), *check_backbone()]
