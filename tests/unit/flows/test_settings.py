import pytest

from flows.errors import InvalidSettings
from flows.settings import REPO_ROOT, load_settings


def test_defaults_are_the_tiny_local_profile(monkeypatch):
    monkeypatch.delenv("MC_HOME")
    s = load_settings()
    assert s.profile == "tiny"
    assert s.home == REPO_ROOT / ".local"
    assert s.store_backend == "local" and s.store_root == s.home / "store"
    assert s.mlflow_db == s.home / "mlflow.db"
    assert (s.triton_http_port, s.triton_grpc_port, s.triton_metrics_port) == (8000, 8001, 8002)


def test_env_prefix_and_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("MC_PROFILE=small\nMC_PREFECT_PORT=4300\n")
    monkeypatch.setenv("MC_PREFECT_PORT", "4400")  # the environment beats .env
    s = load_settings()
    assert s.profile == "small"
    assert s.prefect_port == 4400


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("MC_PROFILE", "huge", "MC_PROFILE"),
        ("MC_MLFLOW_PORT", "70000", "MC_MLFLOW_PORT"),
        ("MC_STORE_BACKEND", "ftp", "MC_STORE_BACKEND"),
        ("MC_S3_ENDPOINT", "http://minio:9000", "MC_S3_ENDPOINT"),
        ("MC_STACK_TIMEOUT_S", "-1", "MC_STACK_TIMEOUT_S"),
    ],
)
def test_invalid_values_are_rejected_with_the_field_name(monkeypatch, env, value, field):
    monkeypatch.setenv(env, value)
    with pytest.raises(InvalidSettings) as exc:
        load_settings()
    assert field in str(exc.value)
    assert "\n" not in str(exc.value)  # one line, not a pydantic dump


def test_credentials_come_from_env_or_mounted_secret_and_never_show(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-from-env")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "mc_s3_secret_key").write_text("very-secret-value")
    monkeypatch.setenv("MC_SECRETS_DIR", str(secrets))
    s = load_settings()
    assert s.s3_access_key.get_secret_value() == "AKIA-from-env"
    assert s.s3_secret_key.get_secret_value() == "very-secret-value"
    shown = repr(s) + str(s.public_dict()) + str(s.model_dump())
    assert "very-secret-value" not in shown and "AKIA-from-env" not in shown
    assert s.public_dict()["s3_secret_key"] == "***"


def test_list_values_of_the_dataclass_groups_parse_from_env(monkeypatch):
    monkeypatch.setenv("MC_CURATION__INTENSITY_LEVELS", "[0.001, 0.004, 0.02]")
    monkeypatch.setenv("MC_VIDEO__MAX_SIDE", "2048")
    s = load_settings()
    assert s.curation.intensity_levels == (0.001, 0.004, 0.02)
    assert s.video.max_side == 2048
    monkeypatch.setenv("MC_CURATION__INTENSITY_LEVELS", "[0.02, 0.001]")
    with pytest.raises(InvalidSettings, match="increasing"):
        load_settings()
