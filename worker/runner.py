"""Running one job: claim -> spec -> supervise (recording events) -> finish.

The task that calls :func:`run_job` is thin, and so is this composition; each step is its own
module:

- the job's devices or CPU slots first (``allocation``): a job whose slots are taken waits a
  little, then goes back to the queue ("deferred"); one this worker can never run is left to
  the workers that can ("unfit"; admission warned its owner when none can);
- claim with a lease (a fencing token; ``leased_job``): a duplicate or re-delivered message finds
  the job held and returns at once; every later registry access is fenced by the token;
- the engine's spec from the job's row (``training_spec``);
- the training processes (one per rank, ``launch``) under the lease, stopped on cancel, or
  checkpointed and stopped on pause (``supervisor``), its events turned into rows
  (``recorder``), and handed to the job's experiment trackers (``trackers``; W&B, MLflow),
  which log from threads of their own;
- the artifact checked in-process, stored and registered with the job's success, or the failure
  recorded with its code (``finisher``).

The worker process never imports torch: the training subprocess does.
"""

from __future__ import annotations

import logging
import time

from registry.db import read_scope
from registry.errors import LeaseLost
from registry.models import Job
from registry.progress import record_allocation
from registry.settings import Settings
from worker.allocation import Allocation, JobNeed, SlotAllocator
from worker.finisher import finish_job
from worker.launch import RankLaunch
from worker.leased_job import LeasedJob
from worker.recorder import EventRecorder
from worker.supervisor import LeaseKeeper, TrainingSupervisor
from worker.trackers import JobTrackers
from worker.training_spec import training_spec_for, write_spec_file

log = logging.getLogger("steer.worker")
ARTIFACT_DIR = "run/adapter"  # where ``cli train --out run`` saves the adapter, in the job dir
ALLOCATION_WAIT_SECONDS = 5.0  # how long a job waits for busy slots before it is requeued
ALLOCATION_POLL_SECONDS = 0.25


def allocator_for(settings: Settings) -> SlotAllocator:
    return SlotAllocator(
        settings.data_dir.resolve() / "devices",
        gpus=settings.worker_gpus,
        cpu_slots=settings.worker_cpu_slots,
    )


def job_need(settings: Settings, job_id: str) -> JobNeed | None:
    with read_scope(settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        return None if job is None else JobNeed.of(job.compute, job.gpus)


def wait_for_slots(allocator: SlotAllocator, need: JobNeed, seconds: float) -> Allocation | None:
    deadline = time.monotonic() + seconds
    while True:
        allocation = allocator.try_allocate(need)
        if allocation is not None or time.monotonic() >= deadline:
            return allocation
        time.sleep(ALLOCATION_POLL_SECONDS)


def run_job(
    settings: Settings,
    job_id: str,
    owner: str,
    allocator: SlotAllocator | None = None,
    *,
    wait_seconds: float = ALLOCATION_WAIT_SECONDS,
) -> str:
    """Run one job to its end; returns what happened (for logs and tests): "skipped",
    "unfit", "deferred", "succeeded", "failed", "cancelled", "paused" or "lease_lost"."""
    allocator = allocator or allocator_for(settings)
    need = job_need(settings, job_id)
    if need is None:
        return "skipped"
    if not allocator.fits(need):
        log.warning(
            "job %s needs %d %s slot(s); this worker has %d: leaving it to the others",
            job_id,
            need.count,
            need.kind,
            allocator.capacity(need.kind),
        )
        return "unfit"
    allocation = wait_for_slots(allocator, need, wait_seconds)
    if allocation is None:
        log.info("job %s: its %d %s slot(s) are busy: requeued", job_id, need.count, need.kind)
        return "deferred"
    try:
        return _run_allocated(settings, job_id, owner, need, allocation, allocator)
    finally:
        allocation.release()


def _run_allocated(
    settings: Settings,
    job_id: str,
    owner: str,
    need: JobNeed,
    allocation: Allocation,
    allocator: SlotAllocator,
) -> str:
    leased = LeasedJob.claim(settings, job_id, owner)
    if leased is None:
        log.info("job %s: not claimable (held, finished or cancelled): skipping", job_id)
        return "skipped"
    log.info(
        "job %s: claimed by %s (lease token %s), %s slots %s",
        job_id,
        owner,
        leased.token,
        allocation.kind,
        allocation.ids,
    )
    keeper = LeaseKeeper(leased)  # from the claim to the last write
    keeper.start()
    trackers = JobTrackers(settings)
    outcome = "lease_lost"
    try:
        job_dir = settings.jobs_dir / job_id
        trackers.start(leased, job_dir)
        spec = leased.read(lambda session, job: training_spec_for(session, settings, job))
        spec = spec.model_copy(
            update={"collective_timeout_seconds": settings.collective_timeout_seconds}
        )
        leased.write(
            record_allocation,
            worker=owner,
            devices=allocation.ids if allocation.kind == "gpu" else [],
            cpu_slots=allocation.ids if allocation.kind == "cpu" else [],
        )
        launch = RankLaunch(
            processes=need.processes,
            allocation=allocation,
            ranks_sharing_cores=(
                need.processes if need.kind == "cpu" else max(1, allocator.capacity("gpu"))
            ),
        )
        recorder = EventRecorder(leased)
        training = TrainingSupervisor(settings, job_dir, keeper, launch).run(
            write_spec_file(spec, job_dir), trackers.following(recorder.record)
        )
        outcome = finish_job(
            settings, leased, job_dir / ARTIFACT_DIR, training, recorder.reported_error
        )
        return outcome
    except LeaseLost:
        return outcome
    finally:
        keeper.stop()
        trackers.close(outcome)
        log.info("job %s: %s", job_id, outcome)
