"""How a Kafka client proves who it is: the security protocol and SASL/SCRAM credentials.

Kept apart from `adapters.kafka` so that the Spark source can take the same credentials
without importing confluent_kafka.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

# Consumer groups of the stream job (Spark's and the lag probe's) start with this, so one
# prefixed ACL covers them.
STREAM_GROUP_PREFIX = "sfmlops-stream"


@dataclass(frozen=True)
class KafkaSecurity:
    """A client's security protocol and, for SASL, its SCRAM user.

    Attributes:
        protocol: PLAINTEXT (no authentication), SASL_PLAINTEXT or SASL_SSL.
        mechanism: The SASL mechanism, SCRAM-SHA-512 or SCRAM-SHA-256.
        username: The SCRAM user (SASL only).
        password: Its password (SASL only).
    """

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def describe(self) -> str:
        """Who connects, for error messages (never the password)."""
        if not self.uses_sasl:
            return "an unauthenticated client (PLAINTEXT)"
        return f"user {self.username!r} ({self.mechanism} over {self.protocol})"

    def client_config(self) -> dict[str, str]:
        """The librdkafka (confluent-kafka) settings for this security."""
        if not self.uses_sasl:
            return {"security.protocol": self.protocol}
        return {
            "security.protocol": self.protocol,
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username or "",
            "sasl.password": self.password.get_secret_value() if self.password else "",
        }

    def spark_options(self) -> dict[str, str]:
        """The options of Spark's Kafka source (`kafka.`-prefixed Java client settings)."""
        if not self.uses_sasl:
            return {"kafka.security.protocol": self.protocol}
        password = self.password.get_secret_value() if self.password else ""
        return {
            "kafka.security.protocol": self.protocol,
            "kafka.sasl.mechanism": self.mechanism,
            "kafka.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f"username={_jaas_quoted(self.username or '')} "
                f"password={_jaas_quoted(password)};"
            ),
        }


PLAINTEXT = KafkaSecurity()


def _jaas_quoted(value: str) -> str:
    # JAAS values are double-quoted strings with backslash escapes.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
