"""Alembic environment: runs on the engine handed over by sfmlops.adapters.db.engine.migrate."""

from alembic import context

from sfmlops.adapters.db.tables import metadata

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
