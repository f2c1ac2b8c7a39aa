"""Celery workers that run training jobs in a subprocess. Built under issue 4; empty so far."""
