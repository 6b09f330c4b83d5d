"""The stream job's failure log (adapters/spark-log4j2.properties) in Spark's own JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfmlops.adapters.spark import connector_jars, make_spark_session, stop_session

pytestmark = pytest.mark.integration

QUERY_LOGGER = "org.apache.spark.sql.execution.streaming.runtime.StreamExecution"
ROLL_OVER_BYTES = 10 * 1024 * 1024
OLD_FILES_KEPT = 3


def test_the_failure_log_rolls_over_at_10_mb_and_keeps_three_old_files(
    tmp_path: Path, jars_dir: Path
) -> None:
    log = tmp_path / "logs" / "stream.log"
    report = "x" * 1_000_000  # a query's report is a few kB; this fills the file sooner
    spark = make_spark_session(connector_jars(jars_dir), failure_log=log)
    try:
        logger = spark._jvm.org.apache.logging.log4j.LogManager.getLogger(QUERY_LOGGER)
        for number in range(50):
            logger.warn(f"report {number} {report}")
    finally:
        stop_session(spark)

    files = {path.name: path for path in log.parent.iterdir()}
    assert sorted(files) == ["stream.log", "stream.log.1", "stream.log.2", "stream.log.3"]
    # A file rolls over once it is past the size, so none holds more than one report beyond it.
    assert all(
        path.stat().st_size < ROLL_OVER_BYTES + len(report) + 1_000 for path in files.values()
    )
    # The newest report is in stream.log and the old files are in order: .1 newest, .3 oldest.
    assert "report 49 " in files["stream.log"].read_text()
    first_report = [
        int(files[name].read_text().split("report ", 1)[1].split(" ", 1)[0])
        for name in ("stream.log.3", "stream.log.2", "stream.log.1", "stream.log")
    ]
    assert first_report == sorted(first_report)
