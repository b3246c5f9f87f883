"""Where the tritonserver binary of the nvidia-pytriton wheel lives (laid out by `make setup`).

scripts/layout_triton.py puts it in `<venv>/triton`: `bin/tritonserver`, `lib/` (its shared
libraries, for LD_LIBRARY_PATH) and `backends/python/` (the Python backend and its stub).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from flows.checks import Check
from flows.errors import MotionControlError


@dataclass(frozen=True)
class TritonInstall:
    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def backend_dir(self) -> Path:
        return self.root / "backends"

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    def env(self) -> dict[str, str]:
        """Environment for the server: its libraries, and this venv's Python first on PATH
        (the Python backend stub runs model.py with the interpreter it finds there).

        The stub links `libpython3.11.so.1.0`; the loader would find the system's, whose
        patch release may lack symbols that this interpreter's compiled stdlib modules
        need (e.g. `_ssl`: undefined symbol `_PyModule_Add`), so this interpreter's own
        libpython comes first."""
        venv_bin = str(Path(sys.executable).parent)
        own_libpython = sysconfig.get_config_var("LIBDIR") \
            if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
        return {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(
                p for p in (own_libpython, str(self.lib_dir),
                            os.environ.get("LD_LIBRARY_PATH", "")) if p),
            "PATH": os.pathsep.join((venv_bin, os.environ.get("PATH", ""))),
        }


def find_triton() -> TritonInstall:
    install = TritonInstall(Path(sys.prefix) / "triton")
    missing = [p for p in (install.binary, install.backend_dir / "python" /
                           "libtriton_python.so") if not p.exists()]
    if missing:
        raise MotionControlError(
            f"tritonserver is not laid out ({missing[0]} is missing); run `make setup`")
    return install


def check_tritonserver() -> Check:
    try:
        install = find_triton()
        proc = subprocess.run([str(install.binary), "--help"], env=install.env(),
                              capture_output=True, text=True, timeout=30)
        # `--help` exits 1; the usage text proves the binary and its libraries load.
        ok = "Usage: tritonserver" in proc.stdout + proc.stderr
        return Check("tritonserver", ok, str(install.binary))
    except (MotionControlError, OSError, subprocess.SubprocessError) as exc:
        return Check("tritonserver", False, str(exc))
