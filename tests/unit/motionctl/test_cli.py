"""The command line as a user meets it: subcommands listed, mistakes reported in one line."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

MOTIONCTL = str(Path(sys.executable).parent / "motionctl")


def run(*args, **env):
    return subprocess.run([MOTIONCTL, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_help_lists_the_subcommands():
    proc = run("--help")
    assert proc.returncode == 0
    for name in ("stack", "settings", "doctor"):
        assert name in proc.stdout


def test_invalid_setting_is_one_line_naming_the_variable():
    proc = run("settings", MC_PREFECT_PORT="not-a-port")
    assert proc.returncode == 1
    assert "MC_PREFECT_PORT" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_settings_table_masks_secrets():
    proc = run("settings", MC_S3_SECRET_KEY="hunter2-secret", COLUMNS="200")
    assert proc.returncode == 0, proc.stderr
    assert "MC_S3_SECRET_KEY" in proc.stdout and "***" in proc.stdout
    assert "hunter2-secret" not in proc.stdout


def test_stack_status_when_down_says_so_and_fails():
    proc = run("stack", "status", COLUMNS="200", MC_MLFLOW_PORT=str(free_port()),
               MC_PREFECT_PORT=str(free_port()), MC_PREFECT_WORKER_PORT=str(free_port()))
    assert proc.returncode == 1
    assert proc.stdout.count("not running") == 3
