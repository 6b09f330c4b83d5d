"""`sfmlops demo`: the product on one machine, from a fresh clone."""

from __future__ import annotations

from pathlib import Path

import typer

from sfmlops.cli import streaming_demo
from sfmlops.cli.context import console, engine_of, settings_of
from sfmlops.cli.data import load_into, migrate_or_fail, print_summary
from sfmlops.datasets import ROSSMANN_DIR


def run_demo(
    ctx: typer.Context,
    path: Path = typer.Option(
        ROSSMANN_DIR,
        "--path",
        help="Data folder to load instead of the bundled Rossmann data.",
        file_okay=False,
    ),
    with_kafka: bool = typer.Option(
        False,
        "--with-kafka",
        help="Then stream the last days through a Kafka broker and Spark into PostgreSQL "
        "(starts a broker and a throwaway PostgreSQL unless configured; needs Java and Maven).",
    ),
) -> None:
    """Migrate the database, load the bundled Rossmann data and summarise it."""
    engine = engine_of(ctx)
    console.rule("sfmlops demo")
    migrate_or_fail(engine)
    load_into(engine, path)
    print_summary(engine)
    if with_kafka:
        streaming_demo.stream_last_days(settings_of(ctx), path)
