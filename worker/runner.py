"""Running one job: claim -> spec -> supervise (recording events) -> finish.

The task that calls :func:`run_job` is thin, and so is this composition; each step is its own
module:

- claim with a lease (a fencing token; ``leased_job``): a duplicate or re-delivered message finds
  the job held and returns at once; every later registry access is fenced by the token;
- the engine's spec from the job's row (``training_spec``);
- the training subprocess under the lease, stopped on cancel (``supervisor``), its events turned
  into rows (``recorder``);
- the artifact checked in-process, stored and registered with the job's success, or the failure
  recorded with its code (``finisher``).

The worker process never imports torch: the training subprocess does.
"""

from __future__ import annotations

import logging

from registry.errors import LeaseLost
from registry.settings import Settings
from worker.finisher import finish_job
from worker.leased_job import LeasedJob
from worker.recorder import EventRecorder
from worker.supervisor import LeaseKeeper, TrainingSupervisor
from worker.training_spec import training_spec_for, write_spec_file

log = logging.getLogger("steer.worker")
ARTIFACT_DIR = "run/adapter"  # where ``cli train --out run`` saves the adapter, in the job dir


def run_job(settings: Settings, job_id: str, owner: str) -> str:
    """Run one job to its end; returns what happened (for logs and tests): "skipped",
    "succeeded", "failed", "cancelled" or "lease_lost"."""
    leased = LeasedJob.claim(settings, job_id, owner)
    if leased is None:
        log.info("job %s: not claimable (held, finished or cancelled): skipping", job_id)
        return "skipped"
    log.info("job %s: claimed by %s (lease token %s)", job_id, owner, leased.token)
    keeper = LeaseKeeper(leased)  # from the claim to the last write
    keeper.start()
    outcome = "lease_lost"
    try:
        job_dir = settings.jobs_dir / job_id
        spec = leased.read(lambda session, job: training_spec_for(session, settings, job))
        recorder = EventRecorder(leased)
        training = TrainingSupervisor(settings, job_dir, keeper).run(
            write_spec_file(spec, job_dir), recorder.record
        )
        outcome = finish_job(
            settings, leased, job_dir / ARTIFACT_DIR, training, recorder.reported_error
        )
        return outcome
    except LeaseLost:
        return outcome
    finally:
        keeper.stop()
        log.info("job %s: %s", job_id, outcome)
