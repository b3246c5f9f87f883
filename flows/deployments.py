"""The Prefect deployments of the platform: one per flow, defined here once.

    curate/motioncontrol     force
    train/motioncontrol      stage (0-3), force
    distill/motioncontrol    teacher_version, force
    evaluate/motioncontrol   teacher_version, student_version, force
    promote/motioncontrol    version, to (candidate | champion)
    pipeline/motioncontrol   to
    doctor/motioncontrol     (the self-check)

`make stack-up` registers them on the local *process* work pool `local` and starts a worker
for it, so any flow can be started from the Prefect UI (Deployments -> Run) or with
`prefect deployment run train/motioncontrol -p stage=1`, and runs on this machine. On a
cluster the platform chart registers the same deployments on its Kubernetes work pool
(`motionctl deployments register --pool gpu-pool --image <platform image>`).

Entrypoints are module paths (`flows.train.train_flow`), not files: they resolve wherever
the project is installed (this venv, the platform image), so no code is pulled per run.
The parameters are each flow's own typed signature: Prefect builds the run form from it.
"""

from __future__ import annotations

import contextlib

from flows.settings import REPO_ROOT

DEPLOYMENT = "motioncontrol"  # the deployment name of every flow
LOCAL_POOL = "local"  # the process work pool of the local stack
TAGS = ["motioncontrol"]


def platform_flows() -> list:
    """Every flow a deployment starts, in pipeline order."""
    from flows.curate import curate_flow
    from flows.distill import distill_flow
    from flows.doctor import doctor_flow
    from flows.evaluate import evaluate_flow
    from flows.pipeline import pipeline_flow
    from flows.promote import promote_flow
    from flows.train import train_flow

    return [curate_flow, train_flow, distill_flow, evaluate_flow, promote_flow, pipeline_flow,
            doctor_flow]


def ensure_work_pool(name: str, pool_type: str) -> None:
    """Create work pool `name` of `pool_type` unless it exists (a pool the platform chart's
    worker created with its base job template is left as it is)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            # ObjectAlreadyExists: created meanwhile by a worker starting up
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))


def register(pool: str = LOCAL_POOL, pool_type: str = "process",
             image: str | None = None) -> list[str]:
    """Register (create or update) every flow's deployment on work pool `pool`; returns
    their names (`<flow>/motioncontrol`). A process pool runs them in this machine's venv;
    a Kubernetes pool in pods of `image`."""
    from prefect.deployments.runner import EntrypointType

    ensure_work_pool(pool, pool_type)
    # a process runs in the checkout, where the settings' .env file is
    job_variables = {"working_dir": str(REPO_ROOT)} if pool_type == "process" else {}
    version = _version()
    names = []
    for flow in platform_flows():
        deployment = flow.to_deployment(
            name=DEPLOYMENT, work_pool_name=pool, tags=TAGS, version=version,
            entrypoint_type=EntrypointType.MODULE_PATH, job_variables=job_variables,
            # the flow runs with the settings of the worker's environment (MC_*, .env)
            description=" ".join((flow.description or flow.name).split()))
        deployment.apply(image=image)
        names.append(f"{flow.name}/{DEPLOYMENT}")
    return names


def _version() -> str:
    """The code the deployments run: the git commit in a checkout, else (an image) the
    installed package's version."""
    from importlib import metadata

    from flows.tracking import git_commit

    commit = git_commit()
    return commit[:12] if commit != "unknown" else metadata.version("motioncontrol")
