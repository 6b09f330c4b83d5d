"""scripts/kafka.sh waits for the broker as long as its start-up makes progress, and gives up
on one that is stuck, stopping it. Checked with a stand-in for the broker's JVM whose start-up
is slow or stuck, so no real broker (and no load) decides the outcome."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT
from tests.support.network import free_port

# The stand-in `java`: the broker's start-up as KAFKA_STANDIN says. A slow one logs a step
# every 0.2 s for 4 s, and then until its listener on the configuration's port (the last
# argument) accepts connections, and only then that it started, as the broker does.
STANDIN_JAVA = """#!/usr/bin/env bash
echo $$ >"$STANDIN_PID"
config=${*: -1}
port=$(sed -n 's|^listeners=PLAINTEXT://127.0.0.1:\\([0-9]*\\),.*|\\1|p' "$config")
if [ "$KAFKA_STANDIN" = stuck ]; then
  echo "starting: step 1"
  exec sleep 600
fi
"$STANDIN_PYTHON" -c '
import socket, sys, time
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
time.sleep(600)
' "$port" &
listener=$!
trap 'kill $listener; exit 143' TERM
for step in $(seq 20); do echo "starting: step $step"; sleep 0.2; done
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  echo "starting: opening the listener"
  sleep 0.2
done
echo "[KafkaRaftServer nodeId=1] Kafka Server started"
wait
"""


def start_standin(tmp_path: Path, behaviour: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`kafka.sh start` with the stand-in `java` behaving as `behaviour`; storage already
    formatted and the jars already fetched, so only the broker's start-up runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("java", STANDIN_JAVA), ("mvn", "#!/bin/sh\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    jars = tmp_path / "jars" / "kafka-broker"
    jars.mkdir(parents=True)
    pom = (ROOT / "deps" / "pom.xml").read_bytes()
    (jars / ".pom.sha256").write_text(hashlib.sha256(pom).hexdigest() + "\n")
    data = tmp_path / "home" / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("")
    return subprocess.run(
        [str(ROOT / "scripts" / "kafka.sh"), "start", str(free_port()), str(free_port())],
        env=os.environ
        | {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SFMLOPS_HOME": str(tmp_path / "home"),
            "SFMLOPS_JARS_DIR": str(tmp_path / "jars"),
            "KAFKA_STANDIN": behaviour,
            "STANDIN_PYTHON": sys.executable,
            "STANDIN_PID": str(tmp_path / "standin.pid"),
        }
        | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stop(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "kafka.sh"), "stop"],
        env=os.environ | {"SFMLOPS_HOME": str(tmp_path / "home")},
        capture_output=True,
        timeout=60,
        check=True,
    )


def test_a_slow_start_that_keeps_making_progress_is_waited_for(tmp_path: Path) -> None:
    # 4 s of start-up, longer than the 3 s it may go without progress.
    try:
        started = start_standin(tmp_path, "slow", SFMLOPS_KAFKA_READY_TIMEOUT="3")
    finally:
        stop(tmp_path)

    assert started.returncode == 0, started.stderr
    assert "Kafka running on 127.0.0.1:" in started.stdout


def test_a_stuck_start_fails_with_the_end_of_its_log_and_is_stopped(tmp_path: Path) -> None:
    try:
        started = start_standin(tmp_path, "stuck", SFMLOPS_KAFKA_READY_TIMEOUT="1")
    finally:
        stop(tmp_path)
    pid = int((tmp_path / "standin.pid").read_text())

    assert started.returncode == 1
    assert "Kafka made no progress for 1s" in started.stderr
    assert "starting: step 1" in started.stderr
    assert "Kafka stopped" in started.stderr
    assert not Path(f"/proc/{pid}").exists()


def test_a_start_that_never_gets_ready_fails_at_the_start_limit(tmp_path: Path) -> None:
    started = start_standin(
        tmp_path, "slow", SFMLOPS_KAFKA_READY_TIMEOUT="60", SFMLOPS_KAFKA_START_LIMIT="1"
    )
    stop(tmp_path)

    assert started.returncode == 1
    assert "Kafka not ready after 1s" in started.stderr
