"""serving.probe without a server: its arguments, its inputs, an unreachable URL, how a
server fault's message reads. Against real servers: tests/integration/test_rollout_analysis.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from models.motion.extract import HolisticExtractor
from models.video import read_image, read_video
from serving.probe import FRAMES, main, probe_inputs
from serving.spec import fault_message
from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --url, --requests"),
    (["--url", "127.0.0.1:8001"], "the following arguments are required: --requests"),
    (["--url", "mc-canary", "--requests", "3"], "'mc-canary' is not HOST:PORT"),
    (["--url", "mc-canary:http", "--requests", "3"], "is not HOST:PORT"),
    (["--url", "mc-canary:70000", "--requests", "3"], "is not HOST:PORT"),
    (["--url", "h:1", "--requests", "0"], "'0' is not a positive int"),
    (["--url", "h:1", "--requests", "2.5"], "'2.5' is not a positive int"),
    (["--url", "h:1", "--requests", "2", "--timeout", "nan"], "'nan' is not a positive float"),
])
def test_bad_arguments_exit_2_saying_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_inputs_are_deterministic_and_show_a_person():
    inputs = probe_inputs(seed=3)
    assert inputs == probe_inputs(seed=3)
    assert inputs != probe_inputs(seed=4)
    clip = read_video(inputs.driving_mp4)
    assert clip.num_frames == FRAMES
    with HolisticExtractor() as extractor:  # what the served motion_extractor runs
        extractor.extract_image(read_image(inputs.reference_png))  # raises NoPersonFound
        extractor.extract(clip.frames)


def test_an_unreachable_url_is_one_line_and_exit_1():
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "serving.probe", "--url", url, "--requests", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"{url}: unreachable: no MotionControl server at {url}"), line
    assert "Traceback" not in proc.stderr, proc.stderr


def test_a_server_fault_reads_as_one_line_without_tritons_wrapping():
    raw = ("Failed to process the request(s) for model 'motion_control_0_0', message: "
           "ServerFault: motion_control failed: RuntimeError: student_dit: student_dit failed: "
           "RuntimeError: out of memory\n\nAt:\n  /models/motion_control/1/model.py(42): execute\n")
    assert fault_message(raw) == ("motion_control failed: RuntimeError: student_dit: "
                                  "student_dit failed: RuntimeError: out of memory")
    assert fault_message("plain message") == "plain message"
