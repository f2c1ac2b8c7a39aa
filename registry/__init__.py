"""The SQL registry (SQLAlchemy + Alembic): files, jobs, events, checkpoints, adapters, storage."""
