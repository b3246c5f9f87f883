"""quiet_native_logs: MediaPipe's C++ start-up lines are dropped from fd 2, nothing else is."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from skimage.data import astronaut

from models.motion import HolisticExtractor, NoPersonFound
from models.motion.native_logs import quiet_native_logs

NOISE_LINE = (b"W0000 00:00:1.0  1 inference_feedback_manager.cc:114] Feedback manager requires "
              b"a model with a single signature inference.\n")


def test_noise_dropped_other_lines_kept_in_order(capfd):
    os.write(2, b"before\n")
    with quiet_native_logs():
        os.write(2, NOISE_LINE)
        os.write(2, b"a real error from another thread\n")
        os.write(2, NOISE_LINE)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "inference_feedback_manager" not in err
    assert err.splitlines() == ["before", "a real error from another thread", "after"]


def test_concurrent_and_nested_uses_restore_fd2(capfd):
    barrier = threading.Barrier(4)

    def work(i):
        with quiet_native_logs():
            barrier.wait()
            with quiet_native_logs():
                os.write(2, NOISE_LINE + f"kept {i}\n".encode())
            barrier.wait()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.write(2, b"fd 2 is back\n")
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == sorted([f"kept {i}" for i in range(4)] + ["fd 2 is back"])


def test_extractor_keeps_mediapipe_startup_noise_out_of_the_terminal(capfd):
    """Real MediaPipe graphs: a fresh extractor starts both of its graphs (static search, then
    tracking), which used to print ~8 absl lines each."""
    image = astronaut()
    noise = np.random.default_rng(0).integers(0, 255, (9, 64, 64, 3), dtype=np.uint8)
    with HolisticExtractor() as extractor:
        kps = extractor.extract_image(image)
        extractor.extract(image[None].repeat(3, axis=0))
        # no one in the clip: the searches must not restart the tracking graph, whose
        # start-up lines arrive asynchronously, after the call has returned
        with pytest.raises(NoPersonFound):
            extractor.extract(noise)
        time.sleep(1.0)
    assert kps[..., 3].any()
    err = capfd.readouterr().err
    assert "inference_feedback_manager" not in err and "W0000" not in err, err[-500:]
