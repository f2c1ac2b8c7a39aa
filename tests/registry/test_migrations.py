"""The schema comes from Alembic alone, and it matches the SQLAlchemy models exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import column, inspect, table
from sqlalchemy.orm import Session

from registry.db import get_engine
from registry.ids import new_id
from registry.migrate import alembic_config, upgrade
from registry.models import Base, Job

MODEL_TABLES = set(Base.metadata.tables)


def _old_job(session: Session, file_id: str, **fields: Any) -> str:
    """A queued job's row as an earlier revision's schema holds it: the columns that schema has
    (an insert through today's model would name columns added since)."""
    values: dict[str, Any] = {
        "id": new_id("ftjob"),
        "tenant_id": "t",
        "model": "tiny-llama",
        "training_file": file_id,
        "method": {"type": "post_block"},
        "hyperparameters": {},
        "seed": 42,
        "status": "queued",
        "queue": "cpu",
        "gpus": 0,
        "attempts": 0,
        "max_attempts": 3,
        "lease_token": 0,
        "cancel_requested": False,
        "result_files": [],
        "created_at": datetime.now(UTC),
        **fields,
    }
    present = {column["name"] for column in inspect(session.connection()).get_columns("jobs")}
    row = {name: value for name, value in values.items() if name in present}
    # Those columns alone, typed as the model's: the model's table would add defaults for others.
    typed = (column(name, Job.__table__.c[name].type) for name in row)
    session.execute(table("jobs", *typed).insert().values(row))
    return str(values["id"])


def _tables(url: str) -> set[str]:
    return set(inspect(get_engine(url)).get_table_names())


def _current_revision(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _head() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"the migrations must have one head, found {heads}"
    return heads[0]


def _differences(url: str) -> list[object]:
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_model_tables_are_the_expected_ones() -> None:
    assert {
        "tenants",
        "api_keys",
        "files",
        "jobs",
        "job_events",
        "checkpoints",
        "adapters",
        "metrics",
        "idempotency_keys",
        "workers",
        "adapter_names",
    } == MODEL_TABLES


def test_adapter_versions_given_before_the_counter_are_not_given_again(
    empty_db_url: str,
) -> None:
    """0005: the counter starts from each name's highest stored version."""
    from registry.adapters import create_adapter
    from registry.db import session_scope
    from registry.models import Adapter

    command.upgrade(alembic_config(empty_db_url), "0004")
    fields = {"base_model": "m", "method": {}, "storage_path": "x", "sha256": "0" * 64}
    with session_scope(empty_db_url) as session:
        for version in (1, 3):
            session.add(
                Adapter(
                    id=f"adapter-{version}",
                    tenant_id="t",
                    name="a",
                    version=version,
                    bytes=1,
                    files={},
                    **fields,
                )
            )
    upgrade(empty_db_url)
    with session_scope(empty_db_url) as session:
        created = create_adapter(session, tenant_id="t", name="a", bytes=1, files={}, **fields)
        assert created.version == 4


def test_upgrade_head_on_an_empty_database(empty_db_url: str) -> None:
    assert _tables(empty_db_url) == set()
    upgrade(empty_db_url)
    assert _tables(empty_db_url) == MODEL_TABLES | {"alembic_version"}
    assert _current_revision(empty_db_url) == _head()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    assert _current_revision(db_url) == _head()
    assert _differences(db_url) == []


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    assert _differences(db_url) == []
    command.check(alembic_config(db_url))  # raises if autogenerate would write a migration


def test_downgrade_to_base_then_upgrade_again(db_url: str) -> None:
    command.downgrade(alembic_config(db_url), "base")
    assert _tables(db_url) == {"alembic_version"}
    assert _current_revision(db_url) is None
    upgrade(db_url)
    assert _tables(db_url) == MODEL_TABLES | {"alembic_version"}
    assert _current_revision(db_url) == _head()
    assert _differences(db_url) == []


def test_reft_methods_stored_before_positions_keep_meaning_every_token(empty_db_url: str) -> None:
    """0003: a ReFT method stored without ``positions`` (jobs and adapters) trained at every
    token; it gets ``positions: "all"``. Other methods, and ReFT with positions, are untouched."""
    from registry.db import session_scope
    from registry.models import Adapter, Job
    from tests.db_fixtures import add_file

    command.upgrade(alembic_config(empty_db_url), "0002")
    old_reft = {"type": "reft", "site": {"name": "mlp_output", "layers": None}, "rank": 8}
    new_reft = {**old_reft, "site": {"name": "block_output", "layers": None}, "positions": "f7+l7"}
    with session_scope(empty_db_url) as session:
        file_id = add_file(session, "t").id
        ids = {
            name: _old_job(session, file_id, method=method)
            for name, method in (
                ("old", old_reft),
                ("new", new_reft),
                ("post_block", {"type": "post_block"}),
            )
        }
        adapter = "adapter-old-reft"  # a row as the schema of 0002 holds it
        session.add(
            Adapter(
                id=adapter,
                tenant_id="t",
                name="a",
                version=1,
                job_id=ids["old"],
                base_model="tiny-llama",
                method=old_reft,
                storage_path="x",
                sha256="0" * 64,
                bytes=1,
                files={},
            )
        )
    upgrade(empty_db_url)
    with session_scope(empty_db_url) as session:
        assert session.get(Job, ids["old"]).method == {**old_reft, "positions": "all"}
        assert session.get(Job, ids["new"]).method == new_reft
        assert session.get(Job, ids["post_block"]).method == {"type": "post_block"}
        assert session.get(Adapter, adapter).method == {**old_reft, "positions": "all"}


def test_jobs_stored_before_compute_ran_one_process_per_gpu_without_deepspeed(
    empty_db_url: str,
) -> None:
    """0004: every existing job gets the compute block it ran with (one process per GPU, one
    on CPU, no DeepSpeed), and the workers table starts empty."""
    import sqlalchemy as sa

    from registry.db import session_scope
    from registry.models import Job, Worker
    from tests.db_fixtures import add_file

    command.upgrade(alembic_config(empty_db_url), "0003")
    assert "workers" not in _tables(empty_db_url)
    with session_scope(empty_db_url) as session:
        file_id = add_file(session, "t").id
        ids = {gpus: _old_job(session, file_id, gpus=gpus) for gpus in (0, 1, 4)}
    upgrade(empty_db_url)
    with session_scope(empty_db_url) as session:
        for gpus, job_id in ids.items():
            compute = session.get(Job, job_id).compute
            assert compute == {"gpus": gpus, "processes": max(1, gpus), "deepspeed": None}
        assert session.scalar(sa.select(sa.func.count()).select_from(Worker)) == 0
    assert "workers" in _tables(empty_db_url)


def test_jobs_stored_before_pausing_were_never_asked_and_a_downgrade_requeues_paused_jobs(
    empty_db_url: str,
) -> None:
    """0006: existing jobs get ``pause_requested`` false, existing checkpoints no hashes (an API
    of 0005 still inserts jobs: the column has a database default). Going back to 0005, whose
    code knows no ``paused``, a paused job is queued again (to resume from its checkpoint)."""
    import sqlalchemy as sa

    from registry.db import session_scope
    from registry.jobs import request_pause
    from registry.models import Checkpoint
    from tests.db_fixtures import add_file

    command.upgrade(alembic_config(empty_db_url), "0005")
    with session_scope(empty_db_url) as session:
        file_id = add_file(session, "t").id
        old = _old_job(session, file_id)
        row = {"id": "ftckpt-old", "job_id": old, "step": 4, "storage_path": "x"}
        row["created_at"] = datetime.now(UTC)
        session.execute(table("checkpoints", *(column(name) for name in row)).insert().values(row))
    upgrade(empty_db_url)
    with session_scope(empty_db_url) as session:
        file_id = add_file(session, "t").id
        as_0005 = _old_job(session, file_id)  # names no pause_requested, as 0005's code
    with session_scope(empty_db_url) as session:
        for job_id in (old, as_0005):
            assert session.get(Job, job_id).pause_requested is False
        checkpoint = session.get(Checkpoint, "ftckpt-old")
        assert (checkpoint.files, checkpoint.sha256) == (None, None)
        request_pause(session, session.get(Job, old))
        assert session.get(Job, old).status == "paused"

    command.downgrade(alembic_config(empty_db_url), "0005")
    with get_engine(empty_db_url).connect() as connection:
        statuses = dict(connection.execute(sa.text("SELECT id, status FROM jobs")).all())
    assert statuses == {old: "queued", as_0005: "queued"}
    assert "pause_requested" not in {
        c["name"] for c in inspect(get_engine(empty_db_url)).get_columns("jobs")
    }


def test_downgrades_keep_every_jobs_events_and_checkpoints(empty_db_url: str) -> None:
    """Each downgrade that drops a column of ``jobs`` does it in place: SQLite batch mode's
    copy dropped the table, and the cascade took every job's events and checkpoints with it."""
    import sqlalchemy as sa

    from registry.db import session_scope
    from tests.db_fixtures import add_file

    upgrade(empty_db_url)
    with session_scope(empty_db_url) as session:
        job_id = _old_job(session, add_file(session, "t").id)
        for name, row in (
            ("job_events", {"id": "ftevent-1", "job_id": job_id, "message": "m"}),
            ("checkpoints", {"id": "ftckpt-1", "job_id": job_id, "step": 4, "storage_path": "x"}),
        ):
            row = {**row, "created_at": datetime.now(UTC)}
            if name == "job_events":
                row.update(level="info", type="message")
            session.execute(table(name, *(column(n) for n in row)).insert().values(row))
    script = ScriptDirectory.from_config(alembic_config(empty_db_url))
    for revision in [r.down_revision for r in script.walk_revisions() if r.down_revision]:
        command.downgrade(alembic_config(empty_db_url), str(revision))
        with get_engine(empty_db_url).connect() as connection:
            counts = [
                connection.scalar(sa.text(f"SELECT count(*) FROM {name}"))
                for name in ("jobs", "job_events", "checkpoints")
            ]
        assert counts == [1, 1, 1], f"after the downgrade to {revision}"
