"""The ``steer`` command: run the service (up, api, worker, migrate, reconcile)."""
