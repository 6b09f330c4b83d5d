"""The settings object: defaults, environment, masking."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from sfmlops.settings import MASK, Settings


def test_defaults_keep_everything_under_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    settings = Settings(_env_file=None)

    assert settings.home == tmp_path / ".sfmlops"
    assert settings.effective_database_url == f"sqlite:///{tmp_path / '.sfmlops' / 'sfmlops.db'}"
    assert (
        settings.effective_mlflow_tracking_uri == f"sqlite:///{tmp_path / '.sfmlops' / 'mlflow.db'}"
    )
    assert settings.api_token is None
    assert not (tmp_path / ".sfmlops").exists(), "building settings must not create folders"


def test_environment_variables_are_prefixed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SFMLOPS_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("SFMLOPS_AS_OF", "2015-06-01")
    monkeypatch.setenv("SFMLOPS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")

    settings = Settings(_env_file=None)

    assert settings.home == tmp_path / "h"
    assert settings.as_of == dt.date(2015, 6, 1)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFMLOPS_API_TOKEN", "s3cr3t-token-0123456789abcdefghijk")
    monkeypatch.setenv("SFMLOPS_DATABASE_URL", "postgresql+psycopg2://app:hunter2@db:5432/sales")

    shown = Settings(_env_file=None).masked()

    assert shown["api_token"] == MASK
    assert shown["database_url"] == f"postgresql+psycopg2://app:{MASK}@db:5432/sales"
    # Unset, the read URL is the database URL, and shown masked as well.
    assert shown["database_read_url"] == shown["database_url"]
    assert "hunter2" not in str(shown)
    assert "s3cr3t-token" not in str(shown)


def test_every_secret_field_is_masked_without_being_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class WithAnotherSecret(Settings):
        broker_password: SecretStr | None = None
        broker_url: str = "kafka://user:pa55word@broker:9092"

    monkeypatch.setenv("SFMLOPS_BROKER_PASSWORD", "pa55word")

    shown = WithAnotherSecret(_env_file=None).masked()

    assert shown["broker_password"] == MASK
    assert shown["broker_url"] == f"kafka://user:{MASK}@broker:9092"
    assert "pa55word" not in str(shown)
    assert set(shown) == set(Settings.model_fields) | {"broker_password", "broker_url"}


def test_a_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SFMLOPS_RAY_ADDRESS=127.0.0.1:6379\n")
    monkeypatch.chdir(tmp_path)

    assert Settings().ray_address == "127.0.0.1:6379"


def test_streaming_settings_have_defaults_and_environment_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SFMLOPS_HOME", str(tmp_path / "h"))
    defaults = Settings(_env_file=None)
    monkeypatch.setenv("SFMLOPS_KAFKA_TOPIC", "sales.eu")
    monkeypatch.setenv("SFMLOPS_JARS_DIR", "jars")
    monkeypatch.setenv("SFMLOPS_STREAM_MAX_BATCH_EVENTS", "5000")
    monkeypatch.chdir(tmp_path)

    configured = Settings(_env_file=None)

    assert defaults.kafka_topic == "sales.daily"
    assert defaults.checkpoints_dir == tmp_path / "h" / "checkpoints"
    assert configured.kafka_topic == "sales.eu"
    assert configured.jars_dir == tmp_path / "jars"
    assert configured.stream_max_batch_events == 5000
    assert configured.masked()["kafka_topic"] == "sales.eu"


@pytest.mark.parametrize("name", ["SFMLOPS_API_TOKEN", "SFMLOPS_API_READ_TOKEN"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [("", "is empty"), ("   ", "is empty"), ("x" * 31, "31 characters, fewer than the 32")],
)
def test_empty_or_short_tokens_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=problem):
        Settings(_env_file=None)


def test_a_short_dashboard_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFMLOPS_UI_PASSWORD", "hunter2")

    with pytest.raises(ValidationError, match="7 characters, fewer than the 12"):
        Settings(_env_file=None)


def test_a_long_token_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFMLOPS_API_READ_TOKEN", "r" * 32)

    settings = Settings(_env_file=None)

    assert settings.api_read_token is not None
    assert settings.api_read_token.get_secret_value() == "r" * 32
    assert settings.masked()["api_read_token"] == MASK


def test_kafka_sasl_needs_a_user_and_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFMLOPS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SFMLOPS_KAFKA_USERNAME", "producer")
    with pytest.raises(ValidationError, match="needs SFMLOPS_KAFKA_PASSWORD"):
        Settings(_env_file=None)
    monkeypatch.setenv("SFMLOPS_KAFKA_PASSWORD", 'pa"ss\\word')

    security = Settings(_env_file=None).kafka_security

    assert security.client_config() == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "producer",
        "sasl.password": 'pa"ss\\word',
    }
    assert security.spark_options()["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="producer" password="pa\\"ss\\\\word";'
    )
    assert Settings(_env_file=None).masked()["kafka_password"] == MASK


def test_kafka_defaults_to_plaintext_without_credentials() -> None:
    security = Settings(_env_file=None).kafka_security
    assert security.client_config() == {"security.protocol": "PLAINTEXT"}
    assert security.spark_options() == {"kafka.security.protocol": "PLAINTEXT"}
