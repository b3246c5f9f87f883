"""The serving stages that need no network stay light: every Triton model instance is a
process of its own, and importing torch and diffusers there costs ~5 s of the server's start
and ~330 MB of memory per instance (measured: 6.7 s / 418 MB before, 0.6 s / 88 MB after)."""

import subprocess
import sys

import pytest

# triton_python_backend_utils exists only inside Triton's stub; an empty module stands in for
# it, as the import is all this test runs.
PROBE = """
import sys, types
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
import serving.triton_models.{name}
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize("name", ["motion_extractor", "identity_encoder", "motion_control"])
def test_the_stage_imports_no_torch(name):
    out = subprocess.run([sys.executable, "-c", PROBE.format(name=name)], capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"{name} imports {out.stdout.strip()}"
