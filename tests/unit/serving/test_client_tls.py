"""The SDK reaching a server over TLS (a private CA, mutual TLS) with a bearer token.

Two servers, both on loopback with real TLS:
- the real tritonserver, started with mutual TLS and `--grpc-restricted-protocol` (its own
  token check), serving a one-line Python model named like the entry point: the transport
  and the token are under test here, not the pipeline (test_serving.py serves that);
- STAND-IN for a cluster's gateway (no cluster or gateway can run here): a gRPC server that
  implements only KServe v2's ModelReady and checks the standard `authorization` header, as
  an Envoy/Gateway in front of Triton would.
The client side is the real SDK (`MotionControlClient`), whose `animate` sends the same
credentials and headers as `ready`."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tritonclient.grpc import service_pb2, service_pb2_grpc

from flows.errors import MotionControlError, ServiceUnavailable
from flows.settings import load_settings
from flows.stack import is_healthy
from serving.client import MotionControlClient, ServerError
from serving.tritonserver import find_triton
from tests.conftest import free_port

TOKEN = "s3cret-token"


def _cert(name: str, key, issuer_key=None, issuer=None, ca: bool = False) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, key=None, cert=None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) if cert else
                     key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


class Gateway(service_pb2_grpc.GRPCInferenceServiceServicer):
    def ModelReady(self, request, context):
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        return service_pb2.ModelReadyResponse(ready=request.name == "motion_control")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A private CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("motioncontrol test CA", ca_key, ca=True)
    return {"ca": _write(d / "ca.pem", cert=ca),
            "server_cert": _write(d / "server.pem", cert=_cert("localhost", server_key, ca_key, ca)),
            "server_key": _write(d / "server.key", key=server_key),
            "client_cert": _write(d / "client.pem",
                                  cert=_cert("a client", client_key, ca_key, ca)),
            "client_key": _write(d / "client.key", key=client_key)}


@pytest.fixture(scope="module")
def gateway(pki):
    """A TLS gRPC server on 127.0.0.1 that wants a client certificate from the same CA."""
    credentials = grpc.ssl_server_credentials(
        [(pki["server_key"].read_bytes(), pki["server_cert"].read_bytes())],
        root_certificates=pki["ca"].read_bytes(), require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Gateway(), server)
    port = free_port()
    server.add_secure_port(f"localhost:{port}", credentials)
    server.start()
    yield f"localhost:{port}", pki
    server.stop(grace=None)


def client(monkeypatch, url, **env) -> MotionControlClient:
    for key, value in env.items():
        monkeypatch.setenv(f"MC_CLIENT__{key.upper()}", str(value))
    return MotionControlClient(url, settings=load_settings(), retries=0, timeout_s=5)


def test_tls_with_a_client_certificate_and_token_reaches_the_gateway(gateway, monkeypatch):
    url, pki = gateway
    with client(monkeypatch, url, ca_cert=pki["ca"], client_cert=pki["client_cert"],
                client_key=pki["client_key"], token=TOKEN) as c:
        assert c.ready()


def test_a_wrong_token_is_one_line_that_names_the_setting(gateway, monkeypatch):
    url, pki = gateway
    with client(monkeypatch, url, ca_cert=pki["ca"], client_cert=pki["client_cert"],
                client_key=pki["client_key"], token="wrong") as c, \
            pytest.raises(ServerError, match="UNAUTHENTICATED.*MC_CLIENT__TOKEN"):
        c.ready()


@pytest.mark.parametrize("env", [
    {},  # plaintext against a TLS gateway
    {"tls": "true"},  # the system's roots do not know the private CA
    {"ca_cert": "ca"},  # no client certificate for a gateway that asks for one
])
def test_without_the_right_credentials_the_handshake_fails_clearly(gateway, monkeypatch, env):
    url, pki = gateway
    env = {k: pki.get(v, v) for k, v in env.items()}
    with client(monkeypatch, url, token=TOKEN, **env) as c, \
            pytest.raises(ServiceUnavailable, match=f"no MotionControl server at {url}"):
        c.ready()


def test_missing_certificate_files_and_half_a_key_pair_are_refused(gateway, monkeypatch, tmp_path):
    url, pki = gateway
    with pytest.raises(MotionControlError, match="cannot read MC_CLIENT__CA_CERT"):
        client(monkeypatch, url, ca_cert=tmp_path / "missing.pem")
    monkeypatch.delenv("MC_CLIENT__CA_CERT")
    with pytest.raises(Exception, match="CLIENT_CERT and MC_CLIENT__CLIENT_KEY together"):
        client(monkeypatch, url, client_cert=pki["client_cert"])


# ---------------------------------------------------------------- the real tritonserver

ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]) for r in requests]
"""
RESTRICTED = "health,metadata,inference"  # tritonserver's protocol groups ModelReady/Infer use


@pytest.fixture(scope="module")
def tls_triton(pki, tmp_path_factory):
    """tritonserver on 127.0.0.1 with mutual TLS on gRPC (the test CA) and its own token check
    on every call (`--grpc-restricted-protocol`), serving a model named `motion_control`."""
    root = tmp_path_factory.mktemp("tls-triton")
    model = root / "repository" / "motion_control"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "IN" data_type: TYPE_FP32 dims: [1] }]\n'
        'output [{ name: "OUT" data_type: TYPE_FP32 dims: [1] }]\n'
        'instance_group [{ kind: KIND_CPU count: 1 }]\n')
    (model / "1" / "model.py").write_text(ECHO_MODEL)
    triton, grpc_port, http_port = find_triton(), free_port(), free_port()
    command = [str(triton.binary), "--model-repository", str(root / "repository"),
               "--backend-directory", str(triton.backend_dir), "--allow-metrics", "false",
               "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port),
               "--http-address", "127.0.0.1", "--http-port", str(http_port),
               "--grpc-use-ssl-mutual", "true", "--grpc-root-cert", str(pki["ca"]),
               "--grpc-server-cert", str(pki["server_cert"]),
               "--grpc-server-key", str(pki["server_key"]),
               f"--grpc-restricted-protocol={RESTRICTED}:authorization=Bearer {TOKEN}"]
    with open(root / "tritonserver.log", "wb") as log:
        server = subprocess.Popen(command, env=triton.env(), stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not is_healthy(f"http://127.0.0.1:{http_port}/v2/models/motion_control/ready"):
            assert server.poll() is None and time.monotonic() < deadline, \
                (root / "tritonserver.log").read_text()[-3000:]
            time.sleep(0.3)
        yield f"localhost:{grpc_port}"
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_tls_and_a_token_reach_tritonserver_itself(tls_triton, pki, monkeypatch):
    reach = dict(ca_cert=pki["ca"], client_cert=pki["client_cert"],
                 client_key=pki["client_key"],
                 token_header="triton-grpc-protocol-authorization")
    with client(monkeypatch, tls_triton, token=TOKEN, **reach) as c:
        assert c.ready()
    # a wrong token is refused by tritonserver (UNAVAILABLE, "This protocol is restricted"):
    # one line that names the settings, not "no server", and no retries
    with client(monkeypatch, tls_triton, token="wrong", **reach) as c, \
            pytest.raises(ServerError, match="refused the call.*MC_CLIENT__TOKEN"):
        c.ready()
    # the standard header (what a gateway reads) is not the one tritonserver checks
    with client(monkeypatch, tls_triton, token=TOKEN, **{**reach, "token_header":
                                                          "authorization"}) as c, \
            pytest.raises(ServerError, match="MC_CLIENT__TOKEN_HEADER"):
        c.ready()


def test_tritonserver_refuses_a_client_without_a_certificate(tls_triton, pki, monkeypatch):
    with client(monkeypatch, tls_triton, ca_cert=pki["ca"], token=TOKEN,
                token_header="triton-grpc-protocol-authorization") as c, \
            pytest.raises(ServiceUnavailable, match=f"no MotionControl server at {tls_triton}"):
        c.ready()
