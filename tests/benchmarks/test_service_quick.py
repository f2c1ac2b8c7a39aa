"""The service benchmark's --quick mode end to end: the real ``steer api`` and worker on
PostgreSQL and Redis, driven over loopback, as a subprocess."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "benchmarks" / "service"


WRK = pytest.mark.skipif(shutil.which("wrk") is None, reason="Debian's wrk not here")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("load_generator", "auth"),
    [
        # with API keys (auth): every phase sends one, and a request without it would be a
        # 401, counted as an error below. CI has no wrk: it runs the first case only.
        pytest.param("httpx", True, id="httpx-auth"),
        pytest.param("wrk", False, marks=WRK, id="wrk"),
        pytest.param("wrk", True, marks=WRK, id="wrk-auth"),
    ],
)
def test_service_quick_measures_every_phase_and_where_the_cpu_goes(
    load_generator: str, auth: bool
) -> None:
    command = [sys.executable, str(SERVICE / "run.py"), "--quick"]
    command += ["--load-generator", load_generator] + (["--auth"] if auth else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    stem = "results-auth-quick" if auth else "results-quick"
    results = json.loads((SERVICE / f"{stem}.json").read_text())
    assert results["quick"] is True and results["auth"] is auth
    assert results["job_creation"]["load_generator"] == load_generator
    for phase in ("job_creation", "status_reads"):
        measured = results[phase]
        assert measured["requests"] > 0 and measured["errors"] == 0, measured
        assert measured["p50_ms"] <= measured["p99_ms"]
        cpu = measured["cpu_ms_per_request"]
        # the API and PostgreSQL both did work for every request; the machine-wide total
        # holds every group, up to the few percent by which the kernel's per-process and
        # machine-wide counters disagree (seen: 24.50 machine-wide against 24.76 summed)
        assert cpu["api"] > 0 and cpu["postgres"] > 0, cpu
        parts = cpu["api"] + cpu["postgres"] + cpu["redis"] + cpu["load_generator"]
        assert cpu["total"] >= 0.95 * parts, cpu
    paced = results["paced_creation"]
    assert paced["requests"] > 0 and paced["errors"] == 0, paced
    assert paced["offered_per_second"] == 16.0 and paced["p50_ms"] <= paced["p99_ms"]
    # a creation sends the job's message to Redis; a read does not
    assert results["job_creation"]["cpu_ms_per_request"]["redis"] > 0
    assert results["queue_latency"]["runs"] == 2
    assert 0 < results["queue_latency"]["p50_s"] <= results["queue_latency"]["max_s"]
    fan = results["event_fan_out"]
    assert fan["clients"] == 3 and fan["events_per_client"] > 0
    assert fan["every_client_got_every_event_in_order"] is True
    report = (SERVICE / f"{stem}.md").read_text()
    assert "--quick" in report and "## Where the CPU goes" in report
    assert ("STEER_AUTH=on" in report) is auth
