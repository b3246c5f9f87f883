"""`motionctl`: the one command line of the platform, a thin layer over every other folder.

Each subcommand reads the settings, configures the process environment, and calls one
function of `flows`, `serving` or `deploy`. Errors the user can act on print as one line.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from flows.errors import MotionControlError

app = typer.Typer(
    help="MotionControl: holistic character animation, from curation to serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local MLflow + Prefect servers and Prefect worker on "
                        "127.0.0.1.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
deployments_app = typer.Typer(help="The flows' Prefect deployments.", no_args_is_help=True)
app.add_typer(deployments_app, name="deployments")

console = Console()
err_console = Console(stderr=True)


def friendly_errors(fn: Callable) -> Callable:
    """Print a MotionControlError as one red line and exit 1, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MotionControlError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def _configure() -> None:
    """Runs before every subcommand: Prefect and MLflow read part of their configuration
    from the environment when first imported, so it must be in place first."""
    from flows.runtime import configure

    try:
        configure()
    except MotionControlError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _settings():
    from flows.settings import get_settings

    return get_settings()


# --- settings ---------------------------------------------------------------------------


@app.command("settings")
@friendly_errors
def show_settings() -> None:
    """Show the resolved settings (secrets masked) and where each local state lives."""
    settings = _settings()
    table = Table(title=f"settings (profile {settings.profile})", show_lines=False)
    table.add_column("MC_ variable")
    table.add_column("value", overflow="fold")
    for key, value in settings.public_dict().items():
        table.add_row(f"MC_{key.upper()}", value)
    console.print(table)


# --- stack ------------------------------------------------------------------------------


def _status_table(rows) -> Table:
    table = Table(title="local stack")
    for col in ("service", "state", "pid", "URL"):
        table.add_column(col)
    for row in rows:
        state = "[green]healthy[/]" if row.healthy else f"[red]{row.note or 'unhealthy'}[/]"
        table.add_row(row.name, state, str(row.pid or "-"), row.url)
    return table


@stack_app.command("up")
@friendly_errors
def stack_up() -> None:
    """Start the MLflow server (UI :5000), the Prefect server (UI :4200) and a Prefect worker
    for the flows' deployments (work pool `local`), and wait."""
    from flows import stack

    settings = _settings()
    with console.status("starting the local stack…"):
        rows = stack.up(settings, echo=console.print)
    console.print(_status_table(rows))
    console.print("MLflow UI:  " + rows[0].url + "\nPrefect UI: " + rows[1].url)


@stack_app.command("down")
@friendly_errors
def stack_down() -> None:
    """Stop exactly the processes `stack up` started."""
    from flows import stack

    stopped = stack.down(_settings(), echo=console.print)
    if not stopped:
        console.print("nothing to stop")


@stack_app.command("status")
@friendly_errors
def stack_status() -> None:
    """Show whether each service of the stack is up and healthy."""
    from flows import stack

    rows = stack.status(_settings())
    console.print(_status_table(rows))
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@deployments_app.command("register")
@friendly_errors
def deployments_register(
    pool: str = typer.Option("local", help="the work pool the deployments run on"),
    pool_type: str = typer.Option("process", "--type",
                                  help="its type if it must be created (process, kubernetes)"),
    image: str | None = typer.Option(None, help="the platform image their runs start in "
                                     "(container work pools)"),
) -> None:
    """Register (create or update) one deployment per flow on POOL, at PREFECT_API_URL.
    `make stack-up` does this for the local pool; the platform chart for its Kubernetes
    pool."""
    from flows.deployments import register

    for name in register(pool, pool_type, image):
        console.print(f"{name} on work pool {pool}", highlight=False)


# --- data -------------------------------------------------------------------------------


@app.command("curate")
@friendly_errors
def curate(force: bool = typer.Option(False, help="rebuild even if the inputs are unchanged")):
    """Curate the training data: synthetic + mocap + real clips -> shards + manifest."""
    from flows.curate import run_curation

    settings = _settings()
    result = run_curation(settings, force=force)
    table = Table(title=f"dataset {result.dataset}@{result.digest}"
                        + (" (reused)" if result.reused else ""))
    for col in ("clips", "kept", "where", "MLflow run"):
        table.add_column(col)
    from flows.store import open_store

    table.add_row(str(result.clips_total), str(result.clips_kept),
                  open_store(settings).uri(result.prefix), result.mlflow_run_id or "-")
    console.print(table)


# --- training -----------------------------------------------------------------------------


@app.command("train")
@friendly_errors
def train(stage: int = typer.Option(..., "--stage", help="0 VAE, 1 body, 2 +face, 3 +hands"),
          force: bool = typer.Option(False, help="train again even if the inputs are unchanged")):
    """Train one stage of the teacher (resumes a killed run from its last checkpoint)."""
    from flows.train import run_training

    result = run_training(_settings(), stage, force=force)
    console.print(f"stage {result.stage}: motioncontrol-teacher version {result.version} "
                  f"(run {result.run_id}{', reused' if result.reused else ''})")


@app.command("distill")
@friendly_errors
def distill(teacher_version: int = typer.Option(None, "--teacher-version", min=1,
                                                help="default: the newest stage-3 teacher"),
            force: bool = typer.Option(False, help="distil again even if nothing changed")):
    """Distil the teacher into a few-step student without CFG (the guidance stage, then the steps stage)."""
    from flows.distill import run_distillation

    result = run_distillation(_settings(), teacher_version, force=force)
    console.print(f"motioncontrol-student version {result.student.version} (guidance stage: version "
                  f"{result.guidance.version}) from motioncontrol-teacher version "
                  f"{result.teacher_version}")


# --- evaluation and promotion ---------------------------------------------------------


@app.command("evaluate")
@friendly_errors
def evaluate(teacher_version: int = typer.Option(None, "--teacher-version", min=1,
                                                 help="default: the newest stage-3 teacher"),
             student_version: int = typer.Option(None, "--student-version", min=1,
                                                 help="default: the newest few-step student"),
             force: bool = typer.Option(False, help="evaluate again even if already done")):
    """Score models and baselines on the held-out benchmark set (MLflow `evaluation`)."""
    from flows.evaluate import run_evaluation

    run_evaluation(_settings(), teacher_version, student_version, force=force)


@app.command("promote")
@friendly_errors
def promote(version: int = typer.Option(None, "--version", min=1,
                                        help="student version; default: the newest (to "
                                        "candidate) or the candidate (to champion)"),
            to: str = typer.Option("candidate", "--to", help="candidate or champion"),
            rollback: bool = typer.Option(False, "--rollback",
                                          help="move the alias back to its previous version")):
    """Promote a student through the gates to `candidate`, or `--to champion`; `--rollback`."""
    from flows.promote import run_promotion
    from flows.settings import ALIASES

    if to not in ALIASES:
        raise typer.BadParameter(f"--to must be one of {', '.join(ALIASES)}")
    run_promotion(_settings(), version, to=to, rollback=rollback)


@app.command("pipeline")
@friendly_errors
def pipeline(to: str = typer.Option("champion", "--to",
                                    help="the alias the new student ends at (candidate or "
                                    "champion)")):
    """Curate -> train 0-3 -> distill -> evaluate -> promote; finished stages are reused."""
    from flows.pipeline import pipeline_flow

    result = pipeline_flow(to=to)
    console.print(f"dataset {result.dataset}; motioncontrol-teacher version "
                  f"{result.teacher_version}; motioncontrol-student version "
                  f"{result.student_version} @{result.alias}")


# --- deploy -----------------------------------------------------------------------------


@app.command("canary")
@friendly_errors
def canary(version: int | None = typer.Option(None, "--version", min=1,
                                              help="the motioncontrol-student version to roll "
                                              "out (run again to pick up a rollout you "
                                              "stopped following)"),
           status: bool = typer.Option(False, "--status", help="show the Rollout's step, "
                                       "weight and analyses"),
           abort: bool = typer.Option(False, "--abort", help="roll back to the stable version"),
           promote: bool = typer.Option(False, "--promote", help="go on past a pause (a "
                                        "manual gate)"),
           retry: bool = typer.Option(False, "--retry", help="start an aborted rollout again"),
           dry_run: bool = typer.Option(False, "--dry-run",
                                        help="print the steps and the manifests; touch nothing")):
    """Roll a model version out on Kubernetes (Argo Rollouts, or the chart's two tracks
    without it); `champion` moves when it serves all traffic and passes the promote gates."""
    from deploy.canary import rollout_action, run_canary

    actions = [name for name, on in (("status", status), ("abort", abort),
                                     ("promote", promote), ("retry", retry)) if on]
    if len(actions) + (version is not None) != 1:
        raise typer.BadParameter("give --version N, or one of --status, --abort, --promote, "
                                 "--retry")
    if actions:
        rollout_action(_settings(), actions[0], console=console)
        return
    result = run_canary(_settings(), version, dry_run=dry_run, console=console)
    if result is not None and not result.promoted:
        raise typer.Exit(1)


# --- checks -----------------------------------------------------------------------------


@app.command("doctor")
@friendly_errors
def doctor() -> None:
    """Run the platform self-check flow: object store, MLflow, offline models, tritonserver."""
    from flows.doctor import doctor_flow
    from serving.tritonserver import check_tritonserver

    settings = _settings()
    results = doctor_flow()

    results.append(check_tritonserver())
    table = Table(title=f"motionctl doctor (profile {settings.profile})")
    for col in ("check", "ok", "detail"):
        table.add_column(col)
    for check in results:
        table.add_row(check.name, "[green]yes[/]" if check.ok else "[red]no[/]", check.detail)
    console.print(table)
    if not all(c.ok for c in results):
        raise typer.Exit(1)


# --- serving ----------------------------------------------------------------------------


@app.command("serve")
@friendly_errors
def serve(
    repository: Path | None = typer.Option(None, help="serve this model repository folder "
                                           "instead of building one from the registry"),
    model: str = typer.Option("motioncontrol-student", help="registered model to serve "
                              "(or motioncontrol-teacher for a stage-3 teacher)"),
    alias: str | None = typer.Option(None, help="registry alias (default: champion)"),
    version: int | None = typer.Option(None, help="registry version number"),
) -> None:
    """Start tritonserver on 127.0.0.1 with the model repository; Ctrl-C stops it."""
    from serving.server import serve as run_server

    run_server(_settings(), repository=repository, name=model, alias=alias, version=version,
               echo=lambda line: console.print(line, highlight=False))


@app.command("animate")
@friendly_errors
def animate(
    reference: Path = typer.Option(..., help="image of the character"),
    driving: Path = typer.Option(..., help="video whose motion the character performs"),
    prompt: str = typer.Option("", help="what the scene and camera should be"),
    subject_library: list[Path] = typer.Option(None, help="extra images of the character "
                                               "(repeat the option)"),
    seed: int | None = typer.Option(None, help="same seed, same video"),
    motion_intensity: float | None = typer.Option(None, help="override the measured intensity"),
    out: Path = typer.Option(..., help="where to write the mp4"),
    url: str | None = typer.Option(None, help="gRPC HOST:PORT (default: MC_CLIENT__URL, else "
                                   "the local server; TLS and token: MC_CLIENT__*)"),
    stream: bool = typer.Option(True, help="stream the video as it is generated, with "
                                "progress (--no-stream: one call, the mp4 at the end)"),
) -> None:
    """Animate REFERENCE with the motion of DRIVING through the served model (gRPC)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from serving.client import MotionControlClient

    start = time.monotonic()
    options = dict(subject_library=subject_library, seed=seed,
                   motion_intensity=motion_intensity)
    with MotionControlClient(url) as client:
        size = sum(p.stat().st_size for p in [reference, driving, *(subject_library or [])]
                   if p.is_file())
        console.print(f"sending {size / 1024**2:.1f} MiB to {client.url}", highlight=False)
        if stream:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("sampler calls, {task.fields[frames]} frames written"),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                task = bar.add_task("motion, identity, prompt…", total=None, frames=0)

                def show(part) -> None:
                    frames = bar.tasks[0].fields["frames"] + len(part.frames)
                    bar.update(task, description="generating", completed=part.done,
                               total=part.total, frames=frames)

                client.animate_to_file(out, reference, driving, prompt, progress=show,
                                       **options)
        else:
            with console.status("generating on the server (motion, identity, prompt, video)…"):
                video = client.animate(reference, driving, prompt, **options)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(video)
    console.print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) in "
                  f"{time.monotonic() - start:.1f} s", highlight=False)


@app.command("verify")
@friendly_errors
def verify(video: Path = typer.Argument(..., help="an mp4 to check")) -> None:
    """Is the MotionControl watermark in VIDEO, and who generated it (provenance tags)?"""
    from serving.client import verify as check

    result = check(video)
    console.print(str(result), highlight=False)
    if not result.watermark.found:
        raise typer.Exit(1)


def main() -> None:  # `python -m motionctl`
    sys.exit(app())
