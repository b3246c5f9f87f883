"""`motionctl doctor`: a Prefect flow that checks the platform can do its work here.

It is the smallest real flow of the platform: the object store round-trips a probe object
with its checksum, MLflow has the design's four experiments (created if missing), and the
pretrained models that ship inside packages are where the model code will look.
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


@flow(name="doctor", log_prints=True)
def doctor_flow() -> list[Check]:
    return [check_store(), check_tracking(), *check_offline_models()]
