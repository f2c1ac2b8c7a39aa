"""Celery workers: each job claimed under a lease on the GPUs or CPU slots it needs, trained in a
subprocess (torchrun for several ranks), recorded and finished; the reconciler requeues the jobs
of dead workers."""
