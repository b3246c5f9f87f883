"""tests/bench/perf.py: perf_analyzer starts here, and its input data is Triton's raw form."""

import base64
import struct
import subprocess

import numpy as np
from tritonclient.utils import serialize_byte_tensor

from tests.bench.perf import bytes_tensor, perf_analyzer_binary, perf_analyzer_env


def test_perf_analyzer_runs_with_its_libraries_found(tmp_path):
    out = subprocess.run([str(perf_analyzer_binary()), "--version"], capture_output=True,
                         text=True, timeout=60, env=perf_analyzer_env(tmp_path / "lib"))
    assert out.returncode == 0, out.stderr
    assert "Perf Analyzer Version" in out.stdout + out.stderr


def test_bytes_tensors_are_what_tritonclient_serialises():
    items = [b"\x89PNG\r\n\x1a\n...", b"", "non-Latin: 日本".encode()]
    tensor = bytes_tensor(*items)
    expected = serialize_byte_tensor(np.array(items, np.object_)).item()
    assert base64.b64decode(tensor["b64"]) == expected and tensor["shape"] == [3]
    assert struct.unpack("<I", base64.b64decode(tensor["b64"])[:4])[0] == len(items[0])
