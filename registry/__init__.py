"""The SQL registry (SQLAlchemy + Alembic) that API and workers share: settings, tenants and API
keys, quotas, files, jobs and their states, events, checkpoints, adapters, workers, storage."""
