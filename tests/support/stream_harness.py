"""The streaming tests' broker and per-test environment (topic, database, home)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr
from sqlalchemy import Engine, select

from sfmlops.adapters import kafka
from sfmlops.adapters.db import sales_records
from sfmlops.adapters.db.tables import ingest_dead_letters
from sfmlops.adapters.kafka_security import PLAINTEXT, KafkaSecurity
from tests.support import ROOT
from tests.support.cli_processes import environment

STREAM_TIMEOUT_SECONDS = 240
SFMLOPS = str(Path(sys.executable).with_name("sfmlops"))


@dataclass
class KafkaBroker:
    """The session's broker, which a test may stop and start again (same data, same port).

    With `users` (name: password), clients authenticate with SASL/SCRAM-SHA-512, the super
    user "admin" has `admin_password`, and ACLs decide what the other users may do.
    """

    home: Path
    port: int
    controller_port: int
    admin_password: str | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _script(self, *args: str) -> None:
        env = os.environ | {"SFMLOPS_HOME": str(self.home)}
        if self.admin_password is not None:
            env |= {
                "SFMLOPS_KAFKA_ADMIN_PASSWORD": self.admin_password,
                "SFMLOPS_KAFKA_SCRAM_USERS": " ".join(f"{u}={p}" for u, p in self.users.items()),
            }
        subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), *args],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            # Beyond kafka.sh's own bounds (start limit plus a stop), so the script reports.
            timeout=400,
        )

    def start(self) -> None:
        self._script("start", str(self.port), str(self.controller_port))

    def stop(self) -> None:
        self._script("stop")

    def security(self, user: str, password: str | None = None) -> KafkaSecurity:
        """SCRAM-SHA-512 credentials of `user` (its own password unless one is given)."""
        secret = password if password is not None else self.users.get(user, self.admin_password)
        return KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", user, SecretStr(secret or ""))

    def client_env(self, user: str, password: str | None = None) -> dict[str, str]:
        """The SFMLOPS_KAFKA_* variables of a process that connects as `user`."""
        security = self.security(user, password)
        return {
            "SFMLOPS_KAFKA_SECURITY_PROTOCOL": security.protocol,
            "SFMLOPS_KAFKA_SASL_MECHANISM": security.mechanism,
            "SFMLOPS_KAFKA_USERNAME": user,
            "SFMLOPS_KAFKA_PASSWORD": security.password.get_secret_value()
            if security.password
            else "",
        }

    def grant(
        self, user: str, topic: str, *operations: str, group_prefix: str | None = None
    ) -> None:
        """Allow `user` `operations` (READ, WRITE, CREATE, DESCRIBE) on `topic`, and READ on
        the consumer groups named `group_prefix`*, as the super user."""
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers} | self.security("admin").client_config()
        )
        bindings = [
            AclBinding(
                ResourceType.TOPIC,
                topic,
                ResourcePatternType.LITERAL,
                f"User:{user}",
                "*",
                AclOperation[operation],
                AclPermissionType.ALLOW,
            )
            for operation in operations
        ]
        if group_prefix is not None:
            bindings.append(
                AclBinding(
                    ResourceType.GROUP,
                    group_prefix,
                    ResourcePatternType.PREFIXED,
                    f"User:{user}",
                    "*",
                    AclOperation.READ,
                    AclPermissionType.ALLOW,
                )
            )
        for created in admin.create_acls(bindings).values():
            created.result(30)


@dataclass
class StreamEnv:
    """One test's topic, database and SFMLOPS_HOME, and the ways to drive them."""

    broker: KafkaBroker
    database_url: str
    home: Path
    topic: str
    jars_dir: Path
    engine: Engine
    extra_env: dict[str, str] = field(default_factory=dict)
    security: KafkaSecurity = PLAINTEXT

    def env(self, **overrides: str) -> dict[str, str]:
        return (
            environment(
                self.home,
                database_url=self.database_url,
                kafka_bootstrap_servers=self.broker.bootstrap_servers,
                kafka_topic=self.topic,
                jars_dir=str(self.jars_dir),
            )
            | {"COLUMNS": "200", "NO_COLOR": "1"}
            | self.extra_env
            | overrides
        )

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run an `sfmlops` command to completion."""
        return subprocess.run(
            [SFMLOPS, *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=STREAM_TIMEOUT_SECONDS,
            check=False,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start an `sfmlops` command in its own process group (so a kill reaches Spark too)."""
        return subprocess.Popen(
            [SFMLOPS, *args],
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def send(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """Produce raw events with the idempotent producer and wait for the acknowledgements."""
        servers = self.broker.bootstrap_servers
        kafka.ensure_topic(servers, self.topic, partitions=2, security=self.security)
        producer = kafka.make_producer(servers, security=self.security)
        assert kafka.send(producer, self.topic, keys, values) == len(values)

    def sales(self) -> pd.DataFrame:
        with self.engine.connect() as connection:
            return sales_records.read_sales(connection)

    def dead_letters(self) -> pd.DataFrame:
        with self.engine.connect() as connection:
            rows = connection.execute(select(ingest_dead_letters)).mappings().all()
        return pd.DataFrame([dict(row) for row in rows])


def kill_if_running(process: subprocess.Popen[str]) -> None:
    """SIGKILL a command `StreamEnv.start` started, with its process group (Spark's JVM),
    unless it has exited; then reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
