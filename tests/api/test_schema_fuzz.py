"""Schema-driven fuzzing of the whole API over real HTTP.

Schemathesis reads the live server's own ``/openapi.json`` and, for every operation, generates
requests from it: valid data (positive mode) and data that breaks the schema (negative mode).
Each request goes over HTTP to the real app under uvicorn. Every answer must be below 500, and
every 4xx must be the OpenAI error envelope. Hypothesis runs derandomized with a bounded number
of examples per operation, so the same requests are sent on every run.

Generated path parameters are random strings, which only reach the "not found" branches, so
some of the cases of an operation with path parameters use ids that exist (an uploaded file, a
queued job, a tenant and an API key made by the fixture), and some of the valid bodies carry the
fields that random data never gets right (a real base model and training file, the upload's
purpose), to reach the code behind those checks.

Knobs for a longer hunt: ``STEER_FUZZ_EXAMPLES`` (per operation and mode) and
``STEER_FUZZ_SEED``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.api.conftest import running_api
from tests.api.helpers import JOBS, Api
from tests.reliability_record import record

EXAMPLES_PER_MODE = int(os.environ.get("STEER_FUZZ_EXAMPLES", "25"))  # per operation and mode
MIN_CASES_PER_OPERATION = 10
# Seconds: a request that hangs fails the test instead of stalling it (and an event stream is
# read for this long at most).
REQUEST_TIMEOUT = 15.0
SEED = int(os.environ.get("STEER_FUZZ_SEED", "20240611"))
ENVELOPE_KEYS = {"message", "type", "param", "code"}


# Body fields that random data almost never gets right, set (in half of the valid bodies) to
# values that pass, so that the code behind them runs: the upload's content reaches the JSONL
# validator, and a job body reaches the method and hyperparameter checks. Values: Seeded fields.
PINNED_FIELDS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/v1/files"): {"purpose": "purpose"},
    ("POST", "/v1/fine_tuning/jobs"): {"model": "model", "training_file": "training_file"},
}


@dataclass
class Seeded:
    """The running app and ids that exist on it."""

    api: Api
    path_ids: dict[str, str]
    finished_job: str
    training_file: str
    model: str
    purpose: str = "fine-tune"


@dataclass
class Tally:
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)
    not_negatable: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with running_api(tmp_path_factory.mktemp("schema_fuzz")) as api:
        training_file = str(api.upload_ok()["id"])
        job = api.job_ok(training_file)
        finished = api.job_ok(training_file)
        cancelled = api.client.post(f"{JOBS}/{finished['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        tenant = api.client.post("/v1/admin/tenants", json={"name": "fuzz"})
        assert tenant.status_code == 200, tenant.text
        key = api.client.post(f"/v1/admin/tenants/{tenant.json()['id']}/api_keys", json={})
        assert key.status_code == 200, key.text
        yield Seeded(
            api=api,
            path_ids={
                "file_id": training_file,
                "job_id": str(job["id"]),
                "tenant_id": str(tenant.json()["id"]),
                "key_id": str(key.json()["id"]),
                # No worker runs, so no adapter exists: a name@version that parses.
                "reference": "fuzz@1",
            },
            finished_job=str(finished["id"]),
            training_file=training_file,
            model=api.settings.models[0],
        )


def _path_names(operation: Any) -> list[str]:
    return [p.name for p in operation.path_parameters]


def _strategy(operation: Any, mode: GenerationMode, seeded: Seeded) -> st.SearchStrategy[Any]:
    strategies = [operation.as_strategy(generation_mode=mode)]
    names = _path_names(operation)
    if names and all(name in seeded.path_ids for name in names):
        known = {name: seeded.path_ids[name] for name in names}
        if operation.path.endswith("/events"):
            # ``?stream=true`` (server-sent events) ends only once the job has finished, and no
            # worker runs here: a queued job's stream would stay open until REQUEST_TIMEOUT (the
            # transport cuts event streams there). So the events of a cancelled job are fuzzed,
            # whose stream sends its events and ``done`` at once; random ids answer 404 first.
            known["job_id"] = seeded.finished_job
        strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=known))
    pinned = PINNED_FIELDS.get((operation.method.upper(), operation.path))
    if pinned is not None and mode == GenerationMode.POSITIVE:
        fields = {name: getattr(seeded, attribute) for name, attribute in pinned.items()}

        def with_real_values(case: Any) -> Any:
            if isinstance(case.body, dict):
                case.body = {**case.body, **fields}
            return case

        strategies.append(strategies[0].map(with_real_values))
    return st.one_of(strategies)


def _check(case: Any, response: Any, tally: Tally) -> None:
    label = f"{case.operation.label} [{response.status_code}]"
    if response.status_code >= 500:
        tally.server_errors += 1
        tally.failures.append(f"{label}: {response.content[:300]!r}\n    {case.as_curl_command()}")
        return
    if 400 <= response.status_code < 500:
        problem = _envelope_problem(response)
        if problem:
            tally.failures.append(f"{label}: {problem}\n    {case.as_curl_command()}")


def _envelope_problem(response: Any) -> str | None:
    try:
        body = response.json()
    except Exception:
        return f"not JSON: {response.content[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return f"not the error envelope: {body!r:.300}"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != ENVELOPE_KEYS:
        return f"error keys are not {sorted(ENVELOPE_KEYS)}: {error!r:.300}"
    if not isinstance(error["message"], str) or not error["message"].strip():
        return f"empty message: {error!r:.300}"
    if response.status_code == 422:
        return "a 422 (validation errors are 400)"
    return None


def _fuzz(operation: Any, mode: GenerationMode, seeded: Seeded, tally: Tally) -> None:
    label = operation.label

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, mode, seeded))
    def run(case: Any) -> None:
        try:
            response = case.call(base_url=seeded.api.base_url, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:  # a dropped connection or a hang: no answer
            tally.statuses.setdefault(label, Counter())[0] += 1
            tally.server_errors += 1
            tally.failures.append(f"{label} [no answer]: {exc!r}\n    {case.as_curl_command()}")
            return
        tally.statuses.setdefault(label, Counter())[response.status_code] += 1
        _check(case, response, tally)

    try:
        run()
    except Unsatisfiable:
        # Negative mode needs something that can be made invalid; an operation whose only
        # inputs are free-form strings (a path id, the optional Authorization header) has none.
        if mode != GenerationMode.NEGATIVE:
            raise
        tally.not_negatable.append(label)


def _operations(seeded: Seeded) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{seeded.api.base_url}/openapi.json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletions last, so that the ids made by the fixture exist for the other operations.
    return sorted(operations, key=lambda op: op.method.upper() == "DELETE")


@pytest.mark.slow
def test_schema_fuzz_no_server_errors(seeded: Seeded) -> None:
    started = time.monotonic()
    operations = _operations(seeded)
    assert len(operations) >= 20, [op.label for op in operations]
    tally = Tally()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, seeded, tally)
    cases = sum(sum(c.values()) for c in tally.statuses.values())
    record("fuzz", cases=cases, server_errors=tally.server_errors, operations=len(operations))
    print(
        f"schema fuzz: {cases} cases, {len(operations)} operations, "
        f"{time.monotonic() - started:.1f} s"
    )
    for label, statuses in tally.statuses.items():
        print(f"  {label}: {dict(sorted(statuses.items()))}")
    print(f"  no negative data possible: {tally.not_negatable}")
    assert not tally.failures, f"{len(tally.failures)} bad answers:\n" + "\n".join(tally.failures)
    # An operation without any input (GET /health) has a single possible request.
    few = {
        op.label: sum(tally.statuses.get(op.label, {}).values())
        for op in operations
        if any(op.iter_parameters()) or op.body
    }
    few = {label: n for label, n in few.items() if n < MIN_CASES_PER_OPERATION}
    assert not few, f"operations with fewer than {MIN_CASES_PER_OPERATION} cases: {few}"
