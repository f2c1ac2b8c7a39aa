"""``steer``: one command for the whole service.

    steer migrate                 create or upgrade the registry schema (Alembic)
    steer api [--host --port]     the HTTP API (uvicorn)
    steer worker [--queues --gpus --cpu-slots --concurrency --name]
                                  a Celery worker (plus the reconciler)
    steer up [--workers N --port] everything on one machine: migrate, API, N workers
    steer reconcile               requeue jobs whose worker died, once
    steer tenant NAME [--admin] [--max-concurrent-jobs N] [--max-file-bytes N]
                  [--max-training-tokens N]   create a tenant and print its first API key

and, for users of a running service (``steer.user_cli``): ``steer configure``, ``steer files``,
``steer jobs``, ``steer adapters``, ``steer generate``.

Settings come from ``STEER_*`` environment variables (``registry.settings``). With none set,
``steer up`` needs no server: SQLite and a filesystem broker under ``STEER_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial

from registry.settings import Settings, get_settings
from steer.logs import configure_logging

log = logging.getLogger("steer")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    from registry.migrate import upgrade

    settings.ensure_dirs()
    upgrade(settings.resolved_database_url)
    print(f"registry at {_redact(settings.resolved_database_url)} is at the latest schema")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def cmd_api(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from api.app import create_app

    if settings.auth == "off":
        if args.host not in LOCAL_HOSTS:
            raise SystemExit(
                f"refusing to listen on {args.host} with STEER_AUTH=off: bind to "
                "127.0.0.1, or set STEER_AUTH=on (and STEER_ADMIN_KEY)"
            )
        log.warning(
            "authentication is OFF (STEER_AUTH=off): every request is tenant 'default'; "
            "listening on localhost only"
        )
    if settings.broker_url is None and settings.database_url is None:
        log.info(
            "embedded mode: SQLite registry and filesystem broker under %s",
            settings.data_dir.resolve(),
        )
    workers = getattr(args, "workers_api", 1) or 1
    if workers > 1:  # each process builds its own app from the same STEER_* environment
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=workers,
            log_level="warning",
        )
        return
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")


def _detect_gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def worker_queues(gpus: int, queues: list[str] | None, cpu_slots: int = 1) -> list[str]:
    """A worker with G GPUs serves jobs that need 1..G GPUs, and CPU jobs when it has CPU
    slots (unless told which queues)."""
    if queues:
        return queues
    return [*(["cpu"] if cpu_slots > 0 else []), *(f"gpu{n}" for n in range(1, gpus + 1))]


def _heartbeat_forever(settings: Settings, name: str, stop: threading.Event) -> None:
    from registry.db import session_scope
    from registry.workers import touch_worker

    every = max(1.0, settings.worker_seen_seconds / 5)
    while not stop.wait(every):
        try:
            with session_scope(settings.resolved_database_url) as session:
                touch_worker(session, name)
        except Exception as exc:  # the database may be restarting: try again next beat
            log.warning("worker heartbeat: %s", exc)


def _reconcile_forever(settings: Settings, enqueue, stop: threading.Event) -> None:
    from worker.broker_messages import waiting_job_ids
    from worker.reconciler import reconcile_once

    while not stop.wait(settings.reconcile_every_seconds):
        try:
            reconcile_once(settings, enqueue, partial(waiting_job_ids, settings))
        except Exception as exc:  # the database may be restarting: try again next round
            log.warning("reconciler: %s", exc)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    from registry.db import session_scope
    from registry.workers import register_worker
    from worker.celery_app import enqueuer, make_celery, worker_name

    gpus = _detect_gpus() if args.gpus == "auto" else int(args.gpus)
    cpu_slots = settings.worker_cpu_slots if args.cpu_slots is None else args.cpu_slots
    concurrency = args.concurrency or settings.worker_concurrency or max(1, gpus)
    queues = worker_queues(gpus, args.queues.split(",") if args.queues else None, cpu_slots)
    settings = settings.model_copy(update={"worker_gpus": gpus, "worker_cpu_slots": cpu_slots})
    settings.ensure_dirs()
    app = make_celery(settings)
    name = (args.name or worker_name()).replace("%h", socket.gethostname())
    log.info(
        "worker %s: %s GPU(s), %s CPU slot(s), %s job(s) at once, queues %s",
        name,
        gpus,
        cpu_slots,
        concurrency,
        queues,
    )
    with session_scope(settings.resolved_database_url) as session:
        register_worker(session, name=name, gpus=gpus, cpu_slots=cpu_slots, queues=queues)
    stop = threading.Event()
    threading.Thread(target=_heartbeat_forever, args=(settings, name, stop), daemon=True).start()
    if not args.no_reconciler:
        threading.Thread(
            target=_reconcile_forever, args=(settings, enqueuer(app), stop), daemon=True
        ).start()
    try:
        app.worker_main(
            [
                "worker",
                "--pool",
                "solo" if concurrency == 1 else "threads",
                "--concurrency",
                str(concurrency),
                "--queues",
                ",".join(queues),
                "--hostname",
                args.name or f"worker-{os.getpid()}@%h",
                "--loglevel",
                args.loglevel,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    finally:
        stop.set()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def cmd_tenant(settings: Settings, args: argparse.Namespace) -> None:
    """Create a tenant and its first API key (printed once)."""
    from registry.db import session_scope
    from registry.tenants import QUOTA_FIELDS, create_api_key, create_tenant, set_quotas

    with session_scope(settings.resolved_database_url) as session:
        tenant = create_tenant(session, args.name)
        set_quotas(session, tenant.id, **{name: getattr(args, name) for name in QUOTA_FIELDS})
        _, key = create_api_key(session, tenant.id, "first key", is_admin=args.admin)
    print(f"tenant {tenant.id} ({args.name}); API key (shown once): {key}")


def cmd_reconcile(settings: Settings, _args: argparse.Namespace) -> None:
    from worker.broker_messages import waiting_job_ids
    from worker.celery_app import enqueuer, make_celery
    from worker.reconciler import reconcile_once

    print(
        reconcile_once(
            settings, enqueuer(make_celery(settings)), partial(waiting_job_ids, settings)
        )
    )


def _terminated_with_parent() -> None:
    """Linux: SIGTERM this process (a worker's warm shutdown) when ``steer up`` dies, even by
    SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def cmd_up(settings: Settings, args: argparse.Namespace) -> None:
    """Migrate, then run N worker processes and the API in this process until interrupted
    (Ctrl-C or SIGTERM: the workers stop too)."""
    cmd_migrate(settings, args)
    # uvicorn restores this handler after its own shutdown and raises the signal again: the
    # default action would end the process before the workers are stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "steer.cli",
                "worker",
                "--name",
                f"local-{i}@%h",
                "--loglevel",
                "warning",
                *(["--no-reconciler"] if i else []),
            ],
            preexec_fn=_terminated_with_parent,
        )
        for i in range(args.workers)
    ]
    try:
        cmd_api(settings, args)
    finally:
        for proc in workers:
            proc.terminate()
        deadline = time.monotonic() + 20
        for proc in workers:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate").set_defaults(func=cmd_migrate)
    for name, func in (("api", cmd_api), ("up", cmd_up)):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(func=func)
        if name == "api":
            p.add_argument(
                "--processes",
                dest="workers_api",
                type=_positive_int,
                default=1,
                help="API processes (uvicorn workers) sharing the port",
            )
        if name == "up":
            p.add_argument("--workers", type=int, default=1)
    worker = sub.add_parser("worker")
    worker.add_argument("--queues", default=None, help="comma-separated; default from --gpus")
    worker.add_argument("--gpus", default="0", help="number of GPUs, or 'auto'")
    worker.add_argument(
        "--cpu-slots",
        type=int,
        default=None,
        help="CPU ranks run at once (default: STEER_WORKER_CPU_SLOTS, 2); 0: no CPU jobs",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        help="jobs run at once (default: one per GPU, at least one)",
    )
    worker.add_argument("--name", default=None)
    worker.add_argument("--loglevel", default="info")
    worker.add_argument("--no-reconciler", action="store_true")
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("reconcile").set_defaults(func=cmd_reconcile)
    tenant = sub.add_parser("tenant", help="create a tenant and print its first API key")
    tenant.add_argument("name")
    tenant.add_argument("--admin", action="store_true", help="the key may manage tenants")
    for quota in ("max-concurrent-jobs", "max-file-bytes", "max-training-tokens"):
        tenant.add_argument(f"--{quota}", type=_positive_int, help="quota (default: none)")
    tenant.set_defaults(func=cmd_tenant)
    return parser


USER_COMMANDS = ("configure", "files", "jobs", "adapters", "generate")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in USER_COMMANDS:  # the user side: talk to a running service
        from steer.user_cli import main as user_main

        return user_main(argv)
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_format)
    args.func(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
