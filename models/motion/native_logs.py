"""Keep MediaPipe's C++ start-up chatter out of the terminal without losing anything else.

Every MediaPipe graph (re)start writes ~8 absl lines ("Feedback manager requires a model with
a single signature inference ...") straight to file descriptor 2, bypassing Python; neither
GLOG_minloglevel nor TF_CPP_MIN_LOG_LEVEL reaches absl's logger, so a demo printed hundreds
of them. `quiet_native_logs()` points fd 2 at a temporary file for the duration of a call,
then writes back every line that is not known noise: output of other threads in that window
is delayed, not dropped. Nested and concurrent uses share one redirection (the first one in
sets it up, the last one out restores fd 2), so threads cannot leave fd 2 pointing at a
closed capture.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Lines MediaPipe 0.10.21 prints on every graph start or the first use of TFLite; harmless.
NOISE = re.compile(
    rb"inference_feedback_manager\.cc|"
    rb"All log messages before absl::InitializeLog\(\) is called|"
    rb"Created TensorFlow Lite XNNPACK delegate|"
    rb"Using NORM_RECT without IMAGE_DIMENSIONS")

_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_capture = None


@contextmanager
def quiet_native_logs(noise: re.Pattern[bytes] = NOISE) -> Iterator[None]:
    global _depth, _saved_fd, _capture
    with _lock:
        if _depth == 0:
            sys.stderr.flush()
            _capture = tempfile.TemporaryFile()  # noqa: SIM115 (the last one out closes it)
            _saved_fd = os.dup(2)
            os.dup2(_capture.fileno(), 2)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                sys.stderr.flush()
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _capture.seek(0)
                kept = [line for line in _capture.read().splitlines(keepends=True)
                        if not noise.search(line)]
                _capture.close()
                if kept:
                    os.write(2, b"".join(kept))
