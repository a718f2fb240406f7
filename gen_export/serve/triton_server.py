"""Start the `tritonserver` binary bundled in the nvidia-pytriton wheel, without Docker.

Used by the tests and `scripts/load_triton.py`. The wheel ships the server, its libraries
(`nvidia_pytriton.libs`) and the python backend, with one python stub per Python version. The
3.11 stub is copied into a private backends folder (never into site-packages); the stub embeds a
libpython3.11, so this interpreter's own libpython folder goes first on LD_LIBRARY_PATH (a different
3.11 build's libpython with this interpreter's standard library broke threading here). Servers bind
to 127.0.0.1 only, on free ports, and are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gen_export.errors import GenExportError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bundled_server_root() -> Path:
    try:
        import pytriton
    except ImportError:
        raise GenExportError("nvidia-pytriton is not installed", "pip install 'genexport[serve]'") from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise GenExportError(f"no tritonserver binary under {root}", "reinstall nvidia-pytriton==0.7.0")
    return root


@dataclass
class RunningServer:
    """A started server: `host:port` for tritonclient's HTTP and gRPC clients, and its log."""

    process: subprocess.Popen[bytes]
    http_url: str
    grpc_url: str
    log_path: Path
    command: list[str]
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def bundled_triton_server(repositories: list[Path | str], timeout_s: float = 120.0,
                          server_args: list[str] | None = None,
                          extra_env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """Run the bundled server on the given model repositories until the block exits.

    `server_args` (a Deployment's tritonserver command line, `genexport deploy`) replaces the default
    arguments: its repositories and ports are substituted (`localize_server_args`), the rest runs as written.
    Repositories may be object-store URLs (the bundled server reads s3://); `extra_env` carries credentials.
    """
    root = bundled_server_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise GenExportError(f"the bundled server has no python stub for Python {version}", "use Python 3.11")
    with tempfile.TemporaryDirectory(prefix="genexport-triton-") as scratch:
        backends = Path(scratch) / "backends"
        shutil.copytree(root / "backends", backends)
        shutil.copy2(stub, backends / "python" / stub.name)
        libs = Path(root.parent.parent) / "nvidia_pytriton.libs"
        libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
        env = dict(os.environ) | (extra_env or {})
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        http_port, grpc_port = _free_port(), _free_port()
        log_path = Path(scratch) / "server.log"
        if server_args is None:
            arguments = [
                "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", f"--http-port={http_port}",
                f"--grpc-port={grpc_port}", "--allow-metrics=false", "--exit-timeout-secs=3",
                *(f"--model-repository={r}" for r in repositories),
            ]
        else:
            arguments = localize_server_args(server_args, repositories, http_port, grpc_port, _free_port())
        command = [str(root / "bin" / "tritonserver"), f"--backend-directory={backends}", *arguments]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        server = RunningServer(process, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log_path, command,
                               {"LD_LIBRARY_PATH": env["LD_LIBRARY_PATH"]})
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"tritonserver exited ({process.returncode}):\n{server.log()[-6000:]}")
                with contextlib.suppress(OSError), urllib.request.urlopen(
                        f"http://{server.http_url}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"tritonserver not ready after {timeout_s:.0f} s:\n{server.log()[-6000:]}")
                time.sleep(0.5)
            yield server
        finally:
            _stop(process)


def localize_server_args(server_args: list[str], repositories: list[Path | str], http_port: int, grpc_port: int,
                         metrics_port: int) -> list[str]:
    """A Deployment's tritonserver arguments for this machine: the program name dropped, the repositories and
    the three ports substituted, every listener bound to 127.0.0.1; everything else exactly as written."""
    if not server_args or Path(server_args[0]).name != "tritonserver":
        raise ValueError(f"not a tritonserver command line: {server_args[:1]}")
    substitutes = {"--http-port": str(http_port), "--grpc-port": str(grpc_port), "--metrics-port": str(metrics_port)}
    arguments = []
    for argument in server_args[1:]:
        option, _, _ = argument.partition("=")
        if option == "--model-repository":
            continue
        arguments.append(f"{option}={substitutes[option]}" if option in substitutes else argument)
    addresses = ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]
    return [*addresses, *arguments, *(f"--model-repository={r}" for r in repositories)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID (the server then stops its python stubs), SIGKILL after 20 s; then its own process
    group, which start_new_session made private to it, so a stub orphaned by a crash cannot linger."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
