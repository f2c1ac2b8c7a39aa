"""Celery workers: each job claimed under a lease, trained in a subprocess, recorded, finished."""
