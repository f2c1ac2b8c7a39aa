"""SQL registry (SQLAlchemy + Alembic). Built under issue 4; empty so far."""
