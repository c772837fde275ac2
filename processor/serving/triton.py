"""Starting the Triton Inference Server binary that the ``nvidia-pytriton`` wheel ships.

PyTriton's own Python API (``Triton().bind``) proxies every request from the Python backend into the
caller's process over ZeroMQ, and its backend stub cannot hand NumPy 2 arrays back (see
``triton_model``); so this module starts the wheel's ``tritonserver`` with a model repository of our
own instead, preparing what PyTriton prepares: a backend directory holding the Python-backend stub
for this interpreter, the wheel's libraries on ``LD_LIBRARY_PATH``, and this environment's Python
first on ``PATH`` (the stub takes its ``sys.path`` from the ``python3`` it finds there).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class TritonUnavailable(RuntimeError):
    """The Triton binary is not installed here, or does not start."""


def distribution() -> Path:
    """The ``tritonserver`` folder of the installed nvidia-pytriton wheel (bin, backends, caches, stubs)."""
    spec = importlib.util.find_spec("pytriton")  # located, not imported: its import pulls in ZeroMQ and more
    if spec is None or not spec.submodule_search_locations:
        raise TritonUnavailable("nvidia-pytriton is not installed (make install installs it)")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise TritonUnavailable(f"{root}/bin/tritonserver is missing")
    return root


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the server listens: HTTP (KServe v2 / Open Inference Protocol), gRPC and Prometheus metrics."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Endpoints:
        return cls(host, free_port(host), free_port(host), free_port(host))


def _backends(workspace: Path, dist: Path) -> Path:
    """A backend directory whose python/ holds the stub built for this interpreter."""
    backends = workspace / "backends"
    if backends.exists():
        shutil.rmtree(backends)
    shutil.copytree(dist / "backends", backends)
    stub = dist / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonUnavailable(f"no Python-backend stub for Python {sys.version_info[0]}.{sys.version_info[1]}")
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return backends


def _environment(dist: Path) -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(dist.parent.parent / "nvidia_pytriton.libs")]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # The stub links libpython3.X; this interpreter's own, not another build's on the default path.
        libs.insert(0, str(libdir))
    env["LD_LIBRARY_PATH"] = ":".join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


class TritonServer:
    """One ``tritonserver`` process over a model repository, models loaded explicitly (repository API)."""

    def __init__(
        self,
        repository: Path,
        workspace: Path,
        endpoints: Endpoints,
        models: tuple[str, ...],
        exit_timeout_s: int = 5,
        log_file: Path | None = None,
    ) -> None:
        self.repository = repository
        self.workspace = workspace
        self.endpoints = endpoints
        self.models = models
        self.exit_timeout_s = exit_timeout_s
        self.log_file = log_file or workspace / "tritonserver.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        dist = distribution()
        e = self.endpoints
        return [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={_backends(self.workspace, dist)}",
            f"--cache-directory={dist / 'caches'}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--http-address={e.host}",
            f"--http-port={e.http_port}",
            f"--grpc-address={e.host}",
            f"--grpc-port={e.grpc_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={e.host}",
            f"--metrics-port={e.metrics_port}",
            "--log-verbose=0",
        ]

    def start(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        command = self.command()
        self._log = self.log_file.open("ab")
        log.info("starting %s", " ".join(command))
        self._process = subprocess.Popen(
            command, env=_environment(distribution()), stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def ready(self) -> bool:
        """``/v2/health/ready``: the server is up and every model loaded (strict readiness)."""
        try:
            with urllib.request.urlopen(f"{self.endpoints.http_url}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise TritonUnavailable(f"tritonserver exited ({self._exit()}); log: {self.tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TritonUnavailable(f"tritonserver not ready after {timeout_s:.0f} s; log: {self.tail()}")

    def load(self, model: str) -> None:
        """Load (or reload, picking up new version folders and config) a model: the repository API."""
        url = f"{self.endpoints.http_url}/v2/repository/models/{model}/load"
        request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"loading {model} failed: {exc.read().decode(errors='replace')}") from exc

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM (in-flight requests finish within ``exit_timeout_s``), or SIGKILL."""
        if self._process is not None and self._process.poll() is None:
            if kill:
                self._process.kill()
            else:
                self._process.terminate()
            try:
                self._process.wait(self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _exit(self) -> str:
        return "not started" if self._process is None else f"code {self._process.poll()}"

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
