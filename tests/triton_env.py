"""A Python environment that runs Triton Inference Server's Python backend, built when needed.

Why an environment of its own: the ``nvidia-pytriton`` wheel ships a ``tritonserver`` binary with
the Python backend, whose stub (``triton_python_backend_stub``) is linked against the system's
libpython3.11 (Debian's, 3.11.2) and takes its standard library and packages from the Python
first on PATH. With the pyenv Python 3.11.7 the tests otherwise run on, 3.11.2's interpreter
meets 3.11.7's standard library and fails (``AttributeError: '_thread.RLock' object has no
attribute '_recursion_count'`` in multiprocessing's resource_tracker); with Debian's
/usr/bin/python3 (packages python3, python3-venv, libpython3.11: .ci/apt-packages.txt) the two
match. So the tests build a venv from
/usr/bin/python3 holding nvidia-pytriton and the engine's runtime dependencies (the project's
``[project.dependencies]``, torch pinned to its CPU wheel by constraints.txt), lay out a
backend directory with the stub for that Python's version, and start tritonserver with the
venv first on PATH.

The venv lies in ``.ci/triton-venv/<hash>`` (git-ignored), the hash taken over the base
Python's version, the requirements and constraints.txt: CI builds it again only when they
change. ``ensure()`` returns the environment, or the reason it cannot be built (the tests
then skip, saying why).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_PYTHON = Path("/usr/bin/python3")
CACHE = ROOT / ".ci" / "triton-venv"
CONSTRAINTS = ROOT / "constraints.txt"
SERVER_PACKAGE = "nvidia-pytriton"
BUILD_TIMEOUT_S = 1800
READY_S = 180.0


@dataclass(frozen=True)
class TritonEnv:
    """A built environment: the venv and the tritonserver it runs."""

    venv: Path

    @property
    def site_packages(self) -> Path:
        return next((self.venv / "lib").glob("python3*/site-packages"))

    @property
    def tritonserver(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        """The backend directory: the wheel's Python backend plus the stub for this Python."""
        return self.venv / "triton-backends"

    def server_command(self, repository: Path, grpc_port: int, http_port: int) -> list[str]:
        """tritonserver serving ``repository`` on loopback ports (metrics off)."""
        return [str(self.tritonserver), f"--model-repository={repository}",
                f"--backend-directory={self.backends}", "--grpc-address=127.0.0.1",
                f"--grpc-port={grpc_port}", "--http-address=127.0.0.1",
                f"--http-port={http_port}", "--allow-metrics=false"]

    def server_environment(self) -> dict[str, str]:
        """The environment tritonserver needs: its libraries, and this venv's Python first
        on PATH (the stub runs the models with it)."""
        libs = str(self.site_packages / "nvidia_pytriton.libs")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYENV"))}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libs, env.get("LD_LIBRARY_PATH")]))
        return env


def requirements() -> list[str]:
    """What the venv holds: the server and the engine's runtime dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [SERVER_PACKAGE, *project["dependencies"]]


def _base_version() -> str:
    out = subprocess.run([str(BASE_PYTHON), "-c", "import sys; print(sys.version)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def venv_path() -> Path:
    """Where the venv for the current requirements lies (built or not)."""
    key = "\n".join([_base_version(), *requirements(), CONSTRAINTS.read_text()])
    return CACHE / hashlib.sha256(key.encode()).hexdigest()[:16]


def _layout_backends(env: TritonEnv) -> None:
    server = env.site_packages / "pytriton" / "tritonserver"
    version = subprocess.run([str(env.venv / "bin" / "python"), "-c",
                              "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    python = env.backends / "python"
    python.mkdir(parents=True)
    for f in (server / "backends" / "python").glob("*.*"):
        shutil.copy2(f, python / f.name)
    shutil.copy2(server / "python_backend_stubs" / version / "triton_python_backend_stub", python)


def build(log=print) -> TritonEnv:
    """The venv for the current requirements; built under a lock (one build at a time), and
    marked ``ready`` only when complete, so a build cut short is redone."""
    target = venv_path()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "ready").is_file():
            log(f"building the Triton venv in {target} (once per requirements)")
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run([str(BASE_PYTHON), "-m", "venv", str(target)], check=True)
            subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", "-c", str(CONSTRAINTS),
                            *requirements()], check=True, timeout=BUILD_TIMEOUT_S)
            _layout_backends(TritonEnv(target))
            (target / "ready").write_text("\n".join(requirements()) + "\n")
    return TritonEnv(target)


def ensure() -> TritonEnv | str:
    """The environment, or why it cannot be had here (a one-line reason for a skip)."""
    if not sys.platform.startswith("linux"):
        return "tritonserver from nvidia-pytriton runs on Linux only"
    if not BASE_PYTHON.is_file():
        return f"{BASE_PYTHON} is missing (Debian packages python3 and python3-venv)"
    try:
        return build(lambda line: print(line, file=sys.stderr))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        return f"the Triton venv could not be built: {e}"


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """tritonserver serving ``repository``'s generation model on fixed loopback ports, so a
    restart comes back where the bridge looks for it."""

    def __init__(self, env: TritonEnv, repository: Path, log_path: Path) -> None:
        self.env, self.repository, self.log_path = env, repository, log_path
        self.grpc_port, self.http_port = free_tcp_port(), free_tcp_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"triton://127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        """Start it and wait until the generation model is ready."""
        import tritonclient.grpc as grpcclient
        # the repository also holds the ONNX-graph models, for Triton's onnxruntime backend,
        # which this wheel lacks: load only the generation model
        cmd = [*self.env.server_command(self.repository, self.grpc_port, self.http_port),
               "--model-control-mode=explicit", "--load-model=barforge"]
        with open(self.log_path, "a") as log:
            # a session of its own: kill() ends its Python-backend stubs with it
            self.proc = subprocess.Popen(cmd, env=self.env.server_environment(), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
        end = time.monotonic() + READY_S
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if client.is_model_ready("barforge"):
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash would end it, to the server and its Python-backend stubs (which
        outlive a killed server otherwise, one per instance, holding the model in memory)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
