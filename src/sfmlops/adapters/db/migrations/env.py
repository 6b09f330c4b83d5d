"""Alembic environment: runs on the engine handed over by sfmlops.adapters.db.engine.migrate.

One transaction per migration: a migration that builds an index CONCURRENTLY (0004) must run
outside a transaction, and Alembic commits the ones before it first.
"""

from alembic import context

from sfmlops.adapters.db.tables import metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
