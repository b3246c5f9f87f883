"""What every Python-backend model.py of the repository shares: reading a request's inputs
by the model's spec, answering with outputs or with an error, and calling another model of
the repository (BLS). Imported only inside tritonserver's Python stub (`pb_utils`).

A model subclasses `TritonModel`, names its spec, and implements `setup()` (load weights
from its version folder) and `infer(inputs) -> outputs` (dicts of numpy arrays by tensor
name), or, for a decoupled model (`ModelSpec.decoupled`), `stream(inputs)`, which yields
one outputs dict per response. An `InvalidInput` raised anywhere (e.g. by models/video.py's
readers) becomes INVALID_ARGUMENT with its message; anything else becomes INTERNAL with the
model's name, and the instance goes on serving.

A server fault is raised out of `execute` rather than answered as an error response: Triton
(2.51) counts an error response as a success in `nv_inference_request_success`, and only a
raised `execute` in `nv_inference_request_failure`, the counter the rollout analysis reads
(triton-inference-server/server#7713). A bad input stays an answered error: the request's
fault, not the server's. Each `execute` gets one request (no dynamic batching), so raising
fails no other request. A decoupled model answers a fault with an error as its last
response (its responses go through a sender, not through `execute`'s return); the unary
entry point that reads the stream raises it, and is counted.
"""

from __future__ import annotations

import ctypes
import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from flows.settings import load_settings
from models.errors import InvalidInput
from serving.spec import ENTRY, INVALID_MARK, MODELS, TensorSpec, fault_message

log = logging.getLogger("motioncontrol.serving")

# glibc's malloc_trim; None on a C library without it (musl)
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def trim_heap() -> None:
    """Give the C heap's free pages back to the OS. A request's transient buffers (decoded
    frames, MediaPipe's and torch's tensors, made on several threads) stay in glibc's
    per-thread arenas once freed, and the next request's sizes rarely fit those holes: a
    motion_extractor grew by ~150 MB over 88 requests without this, ~30 MB with it."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def to_tensor(spec: TensorSpec, value) -> pb_utils.Tensor:
    if spec.dtype == "STRING":
        if isinstance(value, np.ndarray):
            items = list(value.reshape(-1))
        else:
            items = value if isinstance(value, list | tuple) else [value]
        array = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in items],
                         dtype=np.object_)
    else:
        array = np.ascontiguousarray(value, dtype=pb_utils.triton_string_to_numpy(
            f"TYPE_{spec.dtype}"))
    return pb_utils.Tensor(spec.name, array)


def read_inputs(request, specs) -> dict[str, np.ndarray | None]:
    """Input arrays by name; None for an optional input the client left out. STRING inputs
    are object arrays of bytes."""
    out = {}
    for spec in specs:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        if tensor is None and not spec.optional:
            raise InvalidInput(f"input {spec.name} is missing")
        out[spec.name] = None if tensor is None else tensor.as_numpy()
    return out



class ServerFault(Exception):
    """A request failed through no fault of its own (Triton answers it INTERNAL)."""


def invalid_input_response(message: str) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


def _request(name: str, inputs: dict[str, object]):
    spec = MODELS[name]
    tensors = [to_tensor(t, inputs[t.name]) for t in spec.inputs
               if inputs.get(t.name) is not None]
    return pb_utils.InferenceRequest(model_name=name, inputs=tensors,
                                     requested_output_names=spec.output_names())


def _outputs(name: str, response) -> dict[str, np.ndarray] | None:
    """A BLS response's outputs by name (None for a stream's empty last response); its
    INVALID_ARGUMENT raised as `InvalidInput` with the same message, any other error as
    RuntimeError."""
    if response.has_error():
        message = response.error().message()
        if message.startswith(INVALID_MARK):
            raise InvalidInput(message[len(INVALID_MARK):])
        raise RuntimeError(f"{name}: {fault_message(message)}")
    tensors = {t.name: pb_utils.get_output_tensor_by_name(response, t.name)
               for t in MODELS[name].outputs}
    if all(t is None for t in tensors.values()):
        return None
    return {key: t.as_numpy() for key, t in tensors.items()}


def call_model(name: str, inputs: dict[str, object]) -> dict[str, np.ndarray]:
    """Run model `name` of this server on `inputs` (BLS)."""
    return _outputs(name, _request(name, inputs).exec())


def stream_model(name: str, inputs: dict[str, object]) -> Iterator[dict[str, np.ndarray]]:
    """Run decoupled model `name` of this server on `inputs` (BLS); its responses' outputs,
    as they come."""
    for response in _request(name, inputs).exec(decoupled=True):
        outputs = _outputs(name, response)
        if outputs is not None:
            yield outputs


def text(array: np.ndarray | None, name: str) -> str:
    """The one UTF-8 string of a STRING input."""
    if array is None or array.size != 1:
        raise InvalidInput(f"{name} must hold exactly one string")
    try:
        return bytes(array.reshape(-1)[0]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name} is not valid UTF-8 (byte {exc.start}): send text "
                           f"encoded as UTF-8") from None


def blob(array: np.ndarray | None) -> bytes:
    """The one bytes item of a STRING input (an upload)."""
    return bytes(array.reshape(-1)[0])


def scalar(array: np.ndarray | None):
    return None if array is None else array.reshape(-1)[0].item()


class TritonModel:
    """Base of the repository's Python models (Triton calls initialize/execute/finalize)."""

    name: str = ""  # the model's name; the config's wins (one source serves two entries)

    def initialize(self, args: dict) -> None:
        self.name = args.get("model_name") or self.name
        self.model_dir = Path(args["model_repository"]) / args["model_version"]
        # A KIND_GPU instance runs on its GPU; KIND_CPU (and a CPU-only host) on the CPU.
        self.device = f"cuda:{args['model_instance_device_id']}" \
            if args.get("model_instance_kind") == "GPU" else "cpu"
        self.config = json.loads(args["model_config"])
        self.spec = MODELS[self.name]
        self.settings = load_settings()
        self.setup()

    def setup(self) -> None:
        """Load what the model needs (weights from self.model_dir)."""

    def infer(self, inputs: dict[str, np.ndarray | None]) -> dict[str, object]:
        raise NotImplementedError

    def stream(self, inputs: dict[str, np.ndarray | None]) -> Iterator[dict[str, object]]:
        """A decoupled model's responses' outputs, one dict per response."""
        raise NotImplementedError

    def execute(self, requests) -> list | None:
        try:
            return self._execute(requests)
        finally:
            trim_heap()

    def _execute(self, requests) -> list | None:
        if self.spec.decoupled:
            for request in requests:
                self._stream_answer(request)
            return None
        answers = [self._answer(request) for request in requests]
        faults = [fault for _, fault in answers if fault]
        if faults:
            raise ServerFault(faults[0])  # counted as a failure
        return [response for response, _ in answers]

    def _response(self, outputs: dict[str, object]) -> pb_utils.InferenceResponse:
        return pb_utils.InferenceResponse(
            output_tensors=[to_tensor(t, outputs[t.name]) for t in self.spec.outputs])

    def _invalid(self, exc: InvalidInput) -> pb_utils.InferenceResponse:
        # A stream's error reaches a gRPC client as a message without a status code
        # (ModelStreamInferResponse.error_message), so the streaming entry keeps the mark too.
        mark = "" if self.name == ENTRY else INVALID_MARK
        return invalid_input_response(mark + str(exc))

    def _fault(self, exc: Exception) -> str:
        log.error("%s failed:\n%s", self.name, traceback.format_exc())
        return f"{self.name} failed: {type(exc).__name__}: {exc}"

    def _answer(self, request) -> tuple[pb_utils.InferenceResponse | None, str]:
        """The response, or the message of a server fault."""
        try:
            return self._response(self.infer(read_inputs(request, self.spec.inputs))), ""
        except InvalidInput as exc:
            return self._invalid(exc), ""
        except Exception as exc:  # noqa: BLE001 - the request fails, the instance goes on
            return None, self._fault(exc)

    def _stream_answer(self, request) -> None:
        """Every response of a decoupled model to `request`, then the final flag."""
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            for outputs in self.stream(read_inputs(request, self.spec.inputs)):
                sender.send(self._response(outputs))
        except InvalidInput as exc:
            sender.send(self._invalid(exc), flags=final)
        except Exception as exc:  # noqa: BLE001 - the request fails, the instance goes on
            sender.send(pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(self._fault(exc))), flags=final)
        else:
            sender.send(flags=final)

    def finalize(self) -> None:
        pass
