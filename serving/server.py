"""The local tritonserver: start it on a model repository, wait until every model is ready,
stop it with its whole process group (the Python-backend stubs included).

    with TritonServer(settings, repository) as server:   # ready on exit from __enter__
        print(server.endpoints())

`serve(settings, ...)` is `motionctl serve`: build (or take) a repository, start, print the
endpoints, run until Ctrl-C or SIGTERM, stop.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

import serving
from flows.errors import ServiceUnavailable
from flows.settings import STUDENT_MODEL, Settings
from flows.stack import _port_in_use, _stop_tree, _tail, is_healthy
from serving.spec import ENTRY
from serving.tritonserver import find_triton

CODE_ROOT = Path(serving.__file__).resolve().parents[1]  # holds models/, flows/, serving/


class TritonServer:
    def __init__(self, settings: Settings, repository: Path, log_path: Path | None = None):
        self.settings, self.repository = settings, Path(repository)
        self.log_path = log_path or settings.triton_home / "tritonserver.log"
        self.process: psutil.Process | None = None
        self._popen: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.triton_host}:{self.settings.triton_http_port}"

    @property
    def grpc_url(self) -> str:
        return self.settings.triton_grpc_address

    @property
    def metrics_url(self) -> str:
        return self.settings.triton_metrics_url

    def endpoints(self) -> dict[str, str]:
        return {"gRPC": self.grpc_url, "HTTP": self.http_url, "metrics": self.metrics_url}

    def command(self) -> list[str]:
        s, install = self.settings, find_triton()
        return [
            str(install.binary), "--model-repository", str(self.repository),
            "--backend-directory", str(install.backend_dir),
            "--http-address", s.triton_host, "--http-port", str(s.triton_http_port),
            "--grpc-address", s.triton_host, "--grpc-port", str(s.triton_grpc_port),
            "--metrics-address", s.triton_host, "--metrics-port", str(s.triton_metrics_port),
            "--allow-metrics", "true", "--allow-cpu-metrics", "true",
            # p99 latency per model, as the chart's pods expose it for the rollout analysis
            # (nv_inference_request_summary_us; helm/motioncontrol/templates/deployment.yaml)
            "--metrics-config=summary_latencies=true",
            "--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,0.99:0.001",
            "--exit-timeout-secs", "10", "--log-verbose", "0",
        ]

    def start(self) -> TritonServer:
        s = self.settings
        for name, port in (("HTTP", s.triton_http_port), ("GRPC", s.triton_grpc_port),
                           ("METRICS", s.triton_metrics_port)):
            if _port_in_use(s.triton_host, port):
                raise ServiceUnavailable(
                    f"tritonserver: port {port} ({name}) on {s.triton_host} is taken; stop "
                    f"what uses it or set MC_TRITON_{name}_PORT to a free port")
        env = find_triton().env()
        threads = str(s.serve.torch_threads)  # read by torch, OpenMP and MKL at start
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # The model.py files import this code (models, flows, serving). The Python
            # backend's stub ignores PYTHONPATH, but its sys.path starts with the working
            # directory: so the server runs in the code's root (a container: its WORKDIR).
            popen = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=CODE_ROOT,
                                     start_new_session=True)  # its own group: stop() gets all
        self.process, self._popen = psutil.Process(popen.pid), popen
        return self

    def exit_code(self) -> int | None:
        """The server's exit status once it has exited; None while it runs."""
        return self._popen.poll()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        timeout_s = timeout_s or self.settings.serve.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        ready = f"{self.http_url}/v2/models/{ENTRY}/ready"
        while not is_healthy(ready):
            if self.exit_code() is not None:
                raise ServiceUnavailable(
                    f"tritonserver exited while starting (code {self.exit_code()}); "
                    f"log {self.log_path}:\n{_tail(self.log_path, 30)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceUnavailable(
                    f"tritonserver not ready after {timeout_s:.0f} s "
                    f"(MC_SERVE__STARTUP_TIMEOUT_S); log {self.log_path}:\n"
                    f"{_tail(self.log_path, 30)}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            _stop_tree(self.process, timeout=20)
            self._popen.wait(timeout=5)
            self.process = None

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(settings: Settings, *, repository: Path | None = None, name: str = STUDENT_MODEL,
          alias: str | None = None, version: int | None = None,
          echo: Callable[[str], None] = print) -> None:
    """`motionctl serve`: run tritonserver on `repository` (or one built from the registry)
    until Ctrl-C or SIGTERM."""
    from serving.repository import build_repository

    if repository is None:
        from flows.registry import load_bundle

        if alias is None and version is None:
            alias = "champion"
        bundle = load_bundle(settings, name, alias=alias, version=version)
        repository = settings.triton_home / "repository" / f"{bundle.name}-{bundle.version}"
        echo(f"building the model repository of {bundle.name} version {bundle.version} "
             f"in {repository}")
        build_repository(settings, bundle, repository)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = TritonServer(settings, repository)
    echo(f"starting tritonserver (log {server.log_path})")
    try:
        with server:
            for label, url in server.endpoints().items():
                echo(f"{label:>8}: {url}")
            echo("ready; Ctrl-C stops the server")
            while not stop.wait(0.5):
                if server.exit_code() is not None:
                    raise ServiceUnavailable(f"tritonserver exited (code {server.exit_code()}); "
                                             f"log {server.log_path}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    echo("tritonserver stopped")
