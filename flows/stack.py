"""The local service stack: an MLflow server, a Prefect server and a Prefect worker on
127.0.0.1.

`up` starts each service as its own process group, records its pid under
`MC_HOME/stack/<name>.pid` and waits until its health endpoint answers; a service starts once
those it needs are healthy (the worker needs the Prefect server). Then it registers the
flows' deployments on the worker's process work pool `local` (flows/deployments.py), so any
flow can be started from the Prefect UI and runs on this machine. `down` stops exactly the
processes it recorded (the pid *and* the process start time must match, so a recycled pid
is never killed). Flows use these servers when they are up and the embedded defaults
(SQLite MLflow, Prefect's temporary server) when they are not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from flows.errors import ServiceUnavailable
from flows.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    health_path: str
    command: list[str]
    env: dict[str, str]
    needs: tuple[str, ...] = ()  # services that must be healthy before this one starts


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    healthy: bool
    note: str = ""


def _bin(name: str) -> str:
    # Console scripts of the running interpreter's venv, whatever PATH says.
    return str(Path(sys.executable).parent / name)


def services(settings: Settings) -> list[Service]:
    from flows.deployments import LOCAL_POOL

    host = settings.stack_host
    quiet = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    api_url = f"http://{host}:{settings.prefect_port}/api"
    prefect_env = {**quiet, "PREFECT_HOME": str(settings.prefect_home),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return [
        Service(
            name="mlflow",
            port=settings.mlflow_port,
            health_path="/health",
            command=[
                _bin("mlflow"), "server",
                "--host", host, "--port", str(settings.mlflow_port),
                "--backend-store-uri", f"sqlite:///{settings.mlflow_db}",
                "--artifacts-destination", str(settings.mlflow_artifacts),
                "--workers", "1",
            ],
            env=quiet,
        ),
        Service(
            name="prefect",
            port=settings.prefect_port,
            health_path="/api/health",
            command=[
                _bin("prefect"), "server", "start",
                "--host", host, "--port", str(settings.prefect_port),
            ],
            # the UI's browser code calls the API here, not at Prefect's default port
            env={**prefect_env, "PREFECT_UI_API_URL": api_url},
        ),
        # Runs the flow runs of the deployments on work pool `local` as processes of this
        # venv, with the environment (MC_* settings) `stack up` was given.
        Service(
            name="worker",
            port=settings.prefect_worker_port,
            health_path="/health",
            command=[
                _bin("prefect"), "worker", "start", "--pool", LOCAL_POOL, "--type", "process",
                "--name", "motioncontrol-local", "--with-healthcheck",
            ],
            env={
                **prefect_env,
                # its flow runs track into this stack, whoever's environment started it
                "MC_HOME": str(settings.home), "MC_MLFLOW_PORT": str(settings.mlflow_port),
                "MC_PREFECT_PORT": str(settings.prefect_port),
                "PREFECT_API_URL": api_url,
                "PREFECT_WORKER_WEBSERVER_HOST": host,
                "PREFECT_WORKER_WEBSERVER_PORT": str(settings.prefect_worker_port),
                "PREFECT_LOGGING_LEVEL": "INFO",
            },
            needs=("prefect",),
        ),
    ]


def base_url(settings: Settings, service: Service) -> str:
    return f"http://{settings.stack_host}:{service.port}"


def is_healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --- pid records ------------------------------------------------------------------------


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.stack_dir / f"{name}.pid"


def _log_file(settings: Settings, name: str) -> Path:
    return settings.stack_dir / f"{name}.log"


def _recorded_process(settings: Settings, name: str) -> psutil.Process | None:
    """The process this stack started for `name`, if it is still that very process."""
    path = _pid_file(settings, name)
    try:
        record = json.loads(path.read_text())
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["create_time"]) < 1.0:
            return proc
    except (FileNotFoundError, json.JSONDecodeError, KeyError, psutil.Error):
        pass
    path.unlink(missing_ok=True)  # stale record: the process is gone or was replaced
    return None


def _running_url(settings: Settings, name: str) -> str | None:
    for svc in services(settings):
        if svc.name == name and _recorded_process(settings, name):
            url = base_url(settings, svc)
            if is_healthy(url + svc.health_path):
                return url
    return None


def mlflow_server_url(settings: Settings) -> str | None:
    """URL of the stack's MLflow server if this stack started it and it is healthy."""
    if not _pid_file(settings, "mlflow").exists():  # fast path: no HTTP when never started
        return None
    return _running_url(settings, "mlflow")


def prefect_api_url(settings: Settings) -> str | None:
    """API URL of the stack's Prefect server if this stack started it and it is healthy."""
    if not _pid_file(settings, "prefect").exists():
        return None
    url = _running_url(settings, "prefect")
    return f"{url}/api" if url else None


# --- commands ---------------------------------------------------------------------------


def status(settings: Settings) -> list[ServiceStatus]:
    out = []
    for svc in services(settings):
        url = base_url(settings, svc)
        proc = _recorded_process(settings, svc.name)
        healthy = proc is not None and is_healthy(url + svc.health_path)
        note = "" if proc else ("port taken by another process" if _port_in_use(
            settings.stack_host, svc.port) else "not running")
        out.append(ServiceStatus(svc.name, url, proc.pid if proc else None, healthy, note))
    return out


def up(settings: Settings, echo: Callable[[str], None] = print) -> list[ServiceStatus]:
    """Start every service that is not running yet, each once those it needs are healthy;
    wait until all are; register the flows' deployments on the local work pool."""
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)

    deadline = time.monotonic() + settings.stack_timeout_s
    started: list[tuple[Service, psutil.Process]] = []
    for svc in services(settings):
        if _recorded_process(settings, svc.name):
            echo(f"{svc.name}: already running")
            continue
        if _port_in_use(settings.stack_host, svc.port):
            down(settings, echo=lambda _: None)
            raise ServiceUnavailable(
                f"{svc.name}: port {svc.port} on {settings.stack_host} is used by another "
                f"process; stop it or set MC_{_port_setting(svc)} to a free port"
            )
        _wait_healthy(settings, [s for s in started if s[0].name in svc.needs], deadline)
        started.append((svc, _start(settings, svc)))
        echo(f"{svc.name}: starting (pid {started[-1][1].pid}, log "
             f"{_log_file(settings, svc.name)})")
    _wait_healthy(settings, started, deadline)

    from flows.deployments import LOCAL_POOL, register

    names = register_on(settings, register)
    echo(f"prefect: {len(names)} deployments on work pool '{LOCAL_POOL}' "
         f"({', '.join(names)})")
    return status(settings)


def register_on(settings: Settings, fn: Callable):
    """Run `fn` as a client of the stack's Prefect server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api_url(settings)}):
        return fn()


def _port_setting(svc: Service) -> str:
    return {"mlflow": "MLFLOW_PORT", "prefect": "PREFECT_PORT",
            "worker": "PREFECT_WORKER_PORT"}[svc.name]


def _start(settings: Settings, svc: Service) -> psutil.Process:
    log = open(_log_file(settings, svc.name), "ab")  # noqa: SIM115 - child owns it
    popen = subprocess.Popen(
        svc.command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **svc.env},
        cwd=settings.home,
        start_new_session=True,  # own process group: down() can stop all its children
    )
    log.close()
    proc = psutil.Process(popen.pid)
    _pid_file(settings, svc.name).write_text(
        json.dumps({"pid": proc.pid, "create_time": proc.create_time(), "cmd": svc.command})
    )
    return proc


def _wait_healthy(settings: Settings, waiting: list[tuple[Service, psutil.Process]],
                  deadline: float) -> None:
    """Until every (service, process) of `waiting` answers its health check; stops the
    stack with the reason if one exits or the deadline passes."""
    waiting = list(waiting)
    while waiting:
        for svc, proc in list(waiting):
            if is_healthy(base_url(settings, svc) + svc.health_path):
                waiting.remove((svc, proc))
            elif not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                down(settings, echo=lambda _: None)
                raise ServiceUnavailable(
                    f"{svc.name} exited while starting; see {_log_file(settings, svc.name)}:\n"
                    + _tail(_log_file(settings, svc.name))
                )
        if waiting and time.monotonic() > deadline:
            names = ", ".join(s.name for s, _ in waiting)
            down(settings, echo=lambda _: None)
            raise ServiceUnavailable(
                f"{names} not healthy after {settings.stack_timeout_s:.0f} s "
                f"(MC_STACK_TIMEOUT_S); logs under {settings.stack_dir}"
            )
        if waiting:
            time.sleep(0.5)


def down(settings: Settings, echo: Callable[[str], None] = print) -> list[str]:
    """Stop exactly the processes this stack recorded; returns the names stopped."""
    stopped = []
    for svc in reversed(services(settings)):  # the worker before the server it reports to
        proc = _recorded_process(settings, svc.name)
        if proc is None:
            continue
        _stop_tree(proc)
        _pid_file(settings, svc.name).unlink(missing_ok=True)
        echo(f"{svc.name}: stopped (pid {proc.pid})")
        stopped.append(svc.name)
    return stopped


def _stop_tree(proc: psutil.Process, timeout: float = 15.0) -> None:
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    # The whole process group (uvicorn and job workers included), then any child that left it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:  # some servers need a second signal; do not leave them behind
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
