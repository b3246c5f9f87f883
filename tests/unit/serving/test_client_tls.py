"""The SDK reaching a cluster's gateway: TLS (a private CA, mutual TLS) and a bearer token.

STAND-IN: the gateway is a real gRPC server with real TLS on loopback that implements only
KServe v2's ModelReady and checks the `authorization` header, as an Envoy/Gateway in front of
Triton would; no cluster or gateway can run here. The client side is the real SDK
(`MotionControlClient`), whose `animate` sends the same credentials and headers as `ready`."""

from __future__ import annotations

import datetime
import ipaddress
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
from serving.client import MotionControlClient, ServerError
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
def gateway(tmp_path_factory):
    """A TLS gRPC server on 127.0.0.1 that wants a client certificate from the same CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("motioncontrol test CA", ca_key, ca=True)
    server_cert = _cert("localhost", server_key, ca_key, ca)
    client_cert = _cert("a client", client_key, ca_key, ca)
    files = {"ca": _write(d / "ca.pem", cert=ca),
             "client_cert": _write(d / "client.pem", cert=client_cert),
             "client_key": _write(d / "client.key", key=client_key)}
    credentials = grpc.ssl_server_credentials(
        [(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()),
          server_cert.public_bytes(serialization.Encoding.PEM))],
        root_certificates=ca.public_bytes(serialization.Encoding.PEM),
        require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Gateway(), server)
    port = free_port()
    server.add_secure_port(f"localhost:{port}", credentials)
    server.start()
    yield f"localhost:{port}", files
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
