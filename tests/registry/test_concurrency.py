"""Racing claims: of N workers given the same job at once, exactly one gets it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from registry.db import session_scope
from registry.jobs import claim_job, get_job
from registry.models import JobEvent
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant

WORKERS = 8
ROUNDS = 5


def _race(url: str, job_id: str) -> list[int | BaseException | None]:
    barrier = threading.Barrier(WORKERS)

    def claim(owner: str) -> int | None:
        with session_scope(url) as session:
            barrier.wait(timeout=30)
            return claim_job(session, job_id, owner, lease_seconds=60.0)

    outcomes: list[int | BaseException | None] = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(claim, f"worker-{index}") for index in range(WORKERS)]
        for future in futures:
            error = future.exception(timeout=120)
            outcomes.append(error if error is not None else future.result())
    return outcomes


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_exactly_one_of_many_racing_workers_claims_the_job(module_db_url: str, round_: int) -> None:
    tenant = new_tenant()
    with session_scope(module_db_url) as session:
        job_id = add_job(session, tenant, add_file(session, tenant).id).id

    outcomes = _race(module_db_url, job_id)

    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert errors == [], f"claims raised instead of losing the race: {errors!r}"
    winners = [index for index, outcome in enumerate(outcomes) if outcome is not None]
    assert len(winners) == 1, f"round {round_}: outcomes {outcomes}"
    assert outcomes[winners[0]] == 1
    with session_scope(module_db_url) as session:
        job = get_job(session, job_id)
        assert (job.status, job.lease_token, job.attempts) == ("running", 1, 1)
        assert job.lease_owner == f"worker-{winners[0]}"
        started = session.scalar(
            select(func.count()).where(
                JobEvent.job_id == job_id, JobEvent.message.startswith("Job started on")
            )
        )
        assert started == 1
