"""The one settings object of an sfmlops process.

Built once in an entry point (CLI command, API app factory, DAG task) and passed
down; nothing here touches the disk or the network when imported or constructed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from sfmlops.adapters.kafka_security import KafkaSecurity

MASK = "***"  # what SQLAlchemy prints for a hidden password
MIN_TOKEN_CHARS = 32  # about 190 bits from a password generator's alphabet
MIN_PASSWORD_CHARS = 12
# Issued forecasts and scores are kept at least as long as the longest accuracy window (a year).
MIN_MONITORING_RETENTION_DAYS = 366


class Settings(BaseSettings):
    """Effective configuration, read from `SFMLOPS_*` environment variables and `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="SFMLOPS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    home: Path = Field(
        default=Path(".sfmlops"),
        description="Working folder for the embedded database, MLflow store, reports and logs.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the sales database; unset means a SQLite file in HOME.",
    )
    database_read_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL the API's read routes use, e.g. a read-only role of the same "
        "database; unset means SFMLOPS_DATABASE_URL.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; unset means a SQLite backend in HOME.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Address of an existing Ray cluster; unset means a local Ray per command.",
    )
    ray_jobs_url: str | None = Field(
        default=None,
        description="A Ray head's job API (e.g. http://127.0.0.1:8265); unset means local jobs.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset means no broker (embedded ingestion).",
    )
    kafka_topic: str = Field(
        default="sales.daily",
        min_length=1,
        description="Topic the producer writes sales events to and the stream job reads.",
    )
    kafka_topic_partitions: int = Field(
        default=4,
        ge=1,
        description="Partitions of the sales topic when the producer creates it.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How clients connect to Kafka; SASL_* needs KAFKA_USERNAME and KAFKA_PASSWORD.",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        default="SCRAM-SHA-512",
        description="SASL mechanism of the Kafka user (SASL_* protocols only).",
    )
    kafka_username: str | None = Field(
        default=None,
        description="Kafka SCRAM user of this process (one per client: producer, stream job).",
    )
    kafka_password: SecretStr | None = Field(
        default=None,
        description="Password of the Kafka SCRAM user; no default.",
    )
    jars_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "sfmlops" / "jars",
        description="Folder of the Java jars resolved by scripts/fetch-jars.sh (Spark's Kafka connector).",
    )
    stream_max_batch_events: int = Field(
        default=200_000,
        ge=1,
        description="Most Kafka records the stream job reads into one micro-batch.",
    )
    stream_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port the stream job serves its Prometheus metrics on (/metrics); unset: none.",
    )
    stream_lag_seconds: float = Field(
        default=15.0,
        gt=0,
        description=(
            "How often a stream job serving metrics measures its Kafka lag besides after each "
            "batch, so the lag moves while no batch completes (a stuck job)."
        ),
    )
    gbm_shard_series: int | None = Field(
        default=None,
        ge=1,
        description="Most series one gbm booster is fitted on in a full training job; more are "
        "split into shards of whole stores, a model each. Unset: the model's default (2,500).",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token for reads and writes; when set, every API endpoint except /health, "
            f"/ready and /metrics needs a token. At least {MIN_TOKEN_CHARS} characters; no default."
        ),
    )
    api_read_token: SecretStr | None = Field(
        default=None,
        description=(
            f"Bearer token for reads only (at least {MIN_TOKEN_CHARS} characters); no default."
        ),
    )
    model_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            "HMAC key that signs model bundles at registration and verifies them before any "
            f"is loaded (at least {MIN_TOKEN_CHARS} characters); no default. Unset: bundles "
            "are registered unsigned and loaded unchecked."
        ),
    )
    retrain_limit_per_hour: int = Field(
        default=6,
        ge=1,
        description="Training jobs one user may start through the API in any hour.",
    )
    sales_date_margin_days: int = Field(
        default=1,
        ge=0,
        le=366,
        description="Days after today (UTC) a sales record may be dated; later ones are rejected.",
    )
    max_daily_sales: float = Field(
        default=1_000_000.0,
        gt=0,
        description="Most sales one series may have in a day; records above are rejected.",
    )
    max_daily_customers: int = Field(
        default=100_000,
        gt=0,
        description="Most customers one store may have in a day; records above are rejected.",
    )
    ui_password: SecretStr | None = Field(
        default=None,
        description=(
            "Password of the dashboard's login, required when it listens beyond loopback "
            f"(at least {MIN_PASSWORD_CHARS} characters); no default."
        ),
    )
    api_statement_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest an API request's database statement may run (PostgreSQL), in seconds.",
    )
    as_of: dt.date | None = Field(
        default=None,
        description="The date treated as 'today - 1'; unset means the latest sales date stored.",
    )
    api_url: str = Field(
        default="http://127.0.0.1:4242",
        description="Base URL of the forecast API, for the dashboard and the DAGs.",
    )
    api_root_path: str = Field(
        default="",
        description="Path prefix the API is served under behind a proxy, e.g. /api.",
    )
    api_max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        gt=0,
        description="Largest request body the API accepts, in bytes.",
    )
    model_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the API checks the registry for a new champion, in seconds.",
    )
    model_poll_training_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the API checks for a new champion while a training job is "
        "queued or running, or has just succeeded, in seconds.",
    )
    monitoring_retention_days: int = Field(
        default=400,
        ge=MIN_MONITORING_RETENTION_DAYS,
        le=10 * 366,
        description="Days of forecasts kept as issued and their scores, up to the as-of date; "
        "`sfmlops accuracy --prune` (the daily DAG) deletes older ones.",
    )
    metrics_worst_stores: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Stores whose realized RMSPE /metrics exports, the worst against their "
        "backtest first (bounds the number of series).",
    )
    ui_base_path: str = Field(
        default="",
        description="URL path the dashboard is served under behind a proxy, e.g. /dashboard.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        # Relative homes are resolved once so that every path derived from them is stable
        # even if the process changes directory later.
        return home.expanduser().absolute()

    @field_validator("api_token", "api_read_token")
    @classmethod
    def _long_token(cls, token: SecretStr | None) -> SecretStr | None:
        # Fail closed: an empty or guessable token must stop the process at start, not
        # quietly open the endpoints it guards.
        return _checked_secret(token, MIN_TOKEN_CHARS, "token")

    @field_validator("model_signing_key")
    @classmethod
    def _long_signing_key(cls, key: SecretStr | None) -> SecretStr | None:
        return _checked_secret(key, MIN_TOKEN_CHARS, "signing key")

    @field_validator("ui_password")
    @classmethod
    def _long_password(cls, password: SecretStr | None) -> SecretStr | None:
        return _checked_secret(password, MIN_PASSWORD_CHARS, "password")

    @field_validator("ui_base_path")
    @classmethod
    def _bare_ui_base_path(cls, path: str) -> str:
        # Streamlit wants the path without slashes ("" for the root): "/", "/ui/" and "ui"
        # all mean what a person writing them means.
        return path.strip().strip("/")

    @field_validator("jars_dir")
    @classmethod
    def _absolute_jars_dir(cls, jars_dir: Path) -> Path:
        return jars_dir.expanduser().absolute()

    @model_validator(mode="after")
    def _kafka_credentials_with_sasl(self) -> Settings:
        # SASL without a user or password would only fail later, at the broker, with a less
        # direct message; PLAINTEXT with credentials would silently send them nowhere.
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                name
                for name, value in (
                    ("SFMLOPS_KAFKA_USERNAME", self.kafka_username),
                    ("SFMLOPS_KAFKA_PASSWORD", self.kafka_password),
                )
                if not value or (isinstance(value, SecretStr) and not value.get_secret_value())
            ]
            if missing:
                raise ValueError(
                    f"SFMLOPS_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    + " and ".join(missing)
                )
        return self

    @property
    def effective_database_url(self) -> str:
        """The database URL in use: the configured one or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{self.home / 'sfmlops.db'}"

    @property
    def effective_database_read_url(self) -> str:
        """The URL the API reads through: the read URL when given, else the database URL."""
        return self.database_read_url or self.effective_database_url

    @property
    def effective_mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI in use: the configured one or a SQLite store in HOME."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def kafka_security(self) -> KafkaSecurity:
        """This process's Kafka security protocol and SCRAM user, for every Kafka client."""
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_username,
            password=self.kafka_password,
        )

    @property
    def signing_key(self) -> bytes | None:
        """The model signing key as bytes, or None when none is configured."""
        key = self.model_signing_key
        return key.get_secret_value().encode() if key is not None else None

    @property
    def checkpoints_dir(self) -> Path:
        """Where the stream job keeps its Spark checkpoints (the Kafka offsets it committed)."""
        return self.home / "checkpoints"

    @property
    def stream_log_file(self) -> Path:
        """Where the stream job keeps the details of a failure (its one-line error names it)."""
        return self.home / "logs" / "stream.log"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Where the embedded MLflow store keeps artifacts."""
        return self.home / "mlartifacts"

    @property
    def reports_dir(self) -> Path:
        """Where backtest reports are written."""
        return self.home / "reports"

    def ensure_home(self) -> Path:
        """Create HOME if missing (called by entry points, never on import)."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home

    def masked(self) -> dict[str, Any]:
        """Every setting's effective value for display: secrets and URL passwords masked.

        Derived from the fields: a `SecretStr` shows only whether it is set, every text has
        the password of a URL in it masked, and a setting with an `effective_` property shows
        what the product uses.
        """
        shown: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, f"effective_{name}", getattr(self, name))
            if _is_secret(info.annotation):
                shown[name] = MASK if value else _WHEN_UNSET.get(name, "(not set)")
            elif value is None:
                shown[name] = _WHEN_UNSET.get(name, "(not set)")
            elif value == "":
                shown[name] = "(none)"
            elif isinstance(value, str):
                shown[name] = _mask_url(value)
            elif isinstance(value, Path | dt.date):
                shown[name] = str(value)
            else:
                shown[name] = value
        return shown


# What an unset optional setting means, where `(not set)` would not say it.
_WHEN_UNSET = {
    "ray_address": "(local Ray started per command)",
    "ray_jobs_url": "(local jobs)",
    "kafka_bootstrap_servers": "(no broker)",
    "as_of": "(latest sales date)",
    "gbm_shard_series": "(the model's default: 2,500)",
    "api_token": "(not set: the API only listens on loopback)",
    "ui_password": "(not set: the dashboard only on loopback)",
}


def _is_secret(annotation: Any) -> bool:
    """Whether a field's type is SecretStr (alone or in a union such as `SecretStr | None`)."""
    return annotation is SecretStr or SecretStr in get_args(annotation)


def _checked_secret(secret: SecretStr | None, min_chars: int, kind: str) -> SecretStr | None:
    if secret is None:
        return None
    value = secret.get_secret_value()
    if not value.strip():
        raise ValueError(f"the {kind} is empty; unset the variable or give a real {kind}")
    if len(value) < min_chars:
        raise ValueError(
            f"the {kind} has {len(value)} characters, fewer than the {min_chars} required"
        )
    return secret


def _mask_url(url: str) -> str:
    """Hide the password of a URL such as postgresql://user:pw@host/db."""
    try:
        parsed = make_url(url)
    except Exception:  # not an SQLAlchemy-style URL (e.g. http://): nothing to mask
        return url
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)
