"""The security section of ``benchmarks/reliability/results.md``: run the tests that attack the
API (tenant isolation, authentication, body limits, hostile input) and tabulate what each
tries, how many cases it sent, what it requires, and whether it held.

    python benchmarks/reliability/security.py   # rewrites the section in place

``run.py`` calls :func:`run_section` after its fault rounds, so a full regeneration includes it.
The outcome column comes from pytest's JUnit report of this very run; the "required" column says
what each test asserts (read the test for the exact checks).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "benchmarks" / "reliability" / "results.md"
HEADING = "## Security"


@dataclass(frozen=True)
class Case:
    node: str  # pytest node id without parameters; every parametrisation counts
    tries: str
    required: str


CATEGORIES: dict[str, list[Case]] = {
    "Tenant isolation": [
        Case(
            "tests/api/test_auth.py::test_a_tenant_sees_only_its_own_data",
            "tenant B reads, cancels, deletes and trains on tenant A's file and job ids",
            "404 `not_found` for every read and write, 400 on `training_file`; lists stay empty",
        ),
        Case(
            "tests/api/test_tenants.py::test_other_tenants_files_and_jobs_are_invisible",
            "another tenant's file and job ids in 10 reads, writes, cursors and streams, "
            "and as a training file",
            "404 `not_found` each, 400 on `training_file`, their rows unchanged",
        ),
        Case(
            "tests/api/test_adapters.py::test_other_tenants_adapters_are_invisible",
            "another tenant's adapter by id, name@version and name: read, download, delete",
            "404 each; not in /v1/models; its files untouched",
        ),
        Case(
            "tests/api/test_exports.py::test_another_tenants_adapter_is_not_found",
            "exporting another tenant's adapter",
            "404",
        ),
        Case(
            "tests/api/test_generation.py::test_another_tenants_adapter_is_not_found",
            "generating with another tenant's adapter as `model`",
            "404 `model_not_found`",
        ),
        Case(
            "tests/api/test_quotas.py::test_tenant_quotas_apply_to_that_tenant_only",
            "one tenant at its job quota while another submits",
            "429 for the first only",
        ),
        Case(
            "tests/api/test_quotas.py::test_racing_requests_cannot_overrun_the_quota_on_postgres",
            "10 concurrent job creations against a quota of 3 on PostgreSQL",
            "exactly 3 accepted, 7 answered 429",
        ),
        Case(
            "tests/api/test_event_streams.py::test_streams_past_a_tenants_cap_are_429",
            "one tenant opening more event streams than its cap",
            "429 past the cap; another tenant still streams",
        ),
    ],
    "Authentication": [
        Case(
            "tests/api/test_auth.py::test_requests_need_a_valid_key",
            "no key and a wrong key on every kind of route",
            "401 `invalid_api_key`; /health open",
        ),
        Case(
            "tests/api/test_auth.py::test_admin_creates_tenants_and_keys_others_cannot",
            "a tenant key calling admin routes",
            "403 `forbidden`",
        ),
        Case(
            "tests/api/test_auth.py::test_revoked_key_stops_working",
            "a key used after it was revoked",
            "401",
        ),
        Case(
            "tests/api/test_event_streams.py::test_a_revoked_key_ends_its_stream",
            "an event stream opened before its key was revoked",
            "the stream ends within seconds",
        ),
        Case(
            "tests/api/test_auth.py::test_keys_are_stored_hashed",
            "searching the database file for the plain key",
            "not found (keys are hashed)",
        ),
        Case(
            "tests/api/test_auth.py::test_steer_api_refuses_a_public_address_without_auth",
            "starting the API on 0.0.0.0 with auth off",
            "refuses to start",
        ),
        Case(
            "tests/api/test_metrics_auth.py::test_metrics_need_an_admin_key_with_auth_on",
            "/metrics with no key and with a tenant key",
            "401 and 403; 200 with an admin key",
        ),
        Case(
            "tests/api/test_fuzz.py::test_unauthenticated_bodies_are_401s",
            "unauthenticated JSON and upload bodies on every write route, both databases",
            "401 before the body is read, never 5xx",
        ),
        Case(
            "tests/api/test_request_bodies.py::test_a_json_body_without_a_key_is_refused_before_it_is_read",
            "a JSON body without a key, sent slowly",
            "401 before the body has arrived",
        ),
        Case(
            "tests/api/test_request_bodies.py::test_a_chunked_upload_without_a_key_is_refused_before_it_is_read",
            "a chunked upload without a key",
            "401, connection closed, no parser run, no bytes on disk",
        ),
    ],
    "Body limits": [
        Case(
            "tests/api/test_request_bodies.py::test_an_oversized_json_body_is_413_with_or_without_content_length",
            "a JSON body over the limit, announced and chunked",
            "413 `request_too_large` naming the limit",
        ),
        Case(
            "tests/api/test_request_bodies.py::test_an_oversized_chunked_json_body_is_refused_while_it_streams",
            "an endless chunked JSON body",
            "413 while the rest is unsent",
        ),
        Case(
            "tests/api/test_request_bodies.py::test_a_chunked_upload_over_the_limit_is_refused_while_it_streams",
            "an endless chunked upload",
            "413 while it streams, no file row, no bytes left",
        ),
        Case(
            "tests/api/test_fuzz.py::test_an_oversized_json_body_is_a_413",
            "oversized JSON on every JSON route, announced and chunked",
            "413",
        ),
        Case(
            "tests/api/test_fuzz.py::test_an_oversized_upload_is_a_413",
            "an upload over the file limit, announced and chunked",
            "413",
        ),
        Case(
            "tests/api/test_input_boundaries.py::test_metadata_beyond_openai_limits_is_refused",
            "job metadata past 16 pairs, 64-character keys, 512-character values",
            "400 naming `metadata`",
        ),
        Case(
            "tests/api/test_input_boundaries.py::test_upload_with_an_integer_beyond_the_digit_limit_names_its_line",
            "an upload line holding an integer of thousands of digits",
            "the file is stored invalid, naming the line",
        ),
    ],
    "Hostile input": [
        Case(
            "tests/api/test_paths.py::test_traversal_in_ids_is_a_plain_not_found",
            "path traversal in ids of 10 read and write routes",
            "400 or 404 envelope, no file content leaked, nothing changed on disk",
        ),
        Case(
            "tests/api/test_paths.py::test_traversal_as_a_training_file_or_suffix_is_refused",
            "path traversal as a training file or suffix",
            "400 naming `suffix` or `model`, nothing written on disk",
        ),
        Case(
            "tests/api/test_paths.py::test_upload_filenames_never_become_paths",
            "traversal and special names as upload filenames",
            "one file in the content-addressed store, named by its sha256",
        ),
        Case(
            "tests/api/test_fuzz.py::test_bad_text_in_every_job_string",
            "a NUL and a lone surrogate in every string (keys too) of a job body, both databases",
            "200 or a 4xx error envelope, never 5xx",
        ),
        Case(
            "tests/api/test_fuzz.py::test_bad_text_in_every_generation_string",
            "the same in every string of each generation request",
            "200 or a 4xx envelope, never 5xx",
        ),
        Case(
            "tests/api/test_fuzz.py::test_bad_text_in_admin_bodies",
            "the same in tenant and key names",
            "200 or a 4xx envelope, never 5xx",
        ),
        Case(
            "tests/api/test_fuzz.py::test_bad_text_in_every_upload_field",
            "the same in upload fields and filenames",
            "200 or a 4xx envelope, never 5xx",
        ),
        Case(
            "tests/api/test_fuzz.py::test_bad_text_in_every_path_id",
            "NUL and surrogate bytes in every path id",
            "4xx envelope, never 5xx",
        ),
        Case(
            "tests/api/test_fuzz.py::test_every_field_with_wrong_values",
            "wrong types and values (booleans for numbers included) in every job field",
            "400 naming the field",
        ),
        Case(
            "tests/api/test_fuzz.py::test_malformed_body_is_a_4xx_envelope",
            "malformed and truncated JSON bodies",
            "4xx error envelope",
        ),
        Case(
            "tests/api/test_input_boundaries.py::test_adapter_versions_out_of_range_are_not_found",
            "adapter versions past int64, past int32, of 4,300+ digits, negative, zero",
            "404 `not_found`, never 500 or 503",
        ),
        Case(
            "tests/api/test_input_boundaries.py::test_lone_surrogates_in_generation_requests_are_refused_naming_the_field",
            "a lone surrogate as prompt or chat content",
            "400 naming the field",
        ),
        Case(
            "tests/api/test_input_boundaries.py::test_an_upload_with_a_lone_surrogate_names_its_line_and_field",
            "a training line with a lone surrogate",
            "invalid file naming line and field",
        ),
        Case(
            "tests/api/test_input_boundaries.py::test_an_upload_named_with_a_nul_is_refused_and_leaves_no_bytes",
            "an upload filename holding a NUL",
            "400 and no bytes on disk",
        ),
        Case(
            "tests/api/test_schema_fuzz.py",
            "schema-driven fuzzing of every operation (see the section above)",
            "no 5xx",
        ),
    ],
}


def run_cases() -> tuple[dict[str, Counter[str]], str, float]:
    """Run every case once; return outcome counts per node, pytest's summary line, seconds."""
    nodes = [case.node for cases in CATEGORIES.values() for case in cases]
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                *nodes,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        tree = ElementTree.parse(report)
    outcomes: dict[str, Counter[str]] = {node: Counter() for node in nodes}
    for testcase in tree.iter("testcase"):
        module = testcase.get("classname", "").replace(".", "/") + ".py"
        name = testcase.get("name", "").split("[")[0]
        outcome = "passed"
        for child in testcase:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        for node in (f"{module}::{name}", module):
            if node in outcomes:
                outcomes[node][outcome] += 1
                break
    lines = result.stdout.strip().splitlines()
    return outcomes, (lines[-1] if lines else result.stderr[-300:]), seconds


def render(outcomes: dict[str, Counter[str]], summary: str, seconds: float) -> str:
    out = [
        HEADING,
        "",
        "The tests that attack the API, run once by `python benchmarks/reliability/security.py` "
        f"on {time.strftime('%Y-%m-%d')}. Cases counts every parametrisation (routes, fields, "
        "databases, strings); the outcome is pytest's for this run.",
        "",
    ]
    total: Counter[str] = Counter()
    for category, cases in CATEGORIES.items():
        out += [
            f"### {category}",
            "",
            "| what is tried | cases | required | outcome |",
            "|---|---|---|---|",
        ]
        for case in cases:
            counts = outcomes[case.node]
            total.update(counts)
            if not counts:
                verdict = "not run"
            elif counts["failed"]:
                verdict = f"**{counts['failed']} failed**"
            else:
                verdict = "held" + (f" ({counts['skipped']} skipped)" if counts["skipped"] else "")
            out.append(
                f"| {case.tries} (`{case.node.split('::')[-1]}`) | {sum(counts.values())} | "
                f"{case.required} | {verdict} |"
            )
        out.append("")
    out += [
        f"All: {sum(total.values())} cases, {total['passed']} held, {total['failed']} failed, "
        f"{total['skipped']} skipped; pytest: `{summary}` ({seconds:.0f} s).",
        "",
    ]
    return "\n".join(out)


def replace_section(report_text: str, section: str) -> str:
    """Put ``section`` in place of the report's security section, or before its test runs."""
    if HEADING in report_text:
        before, _, rest = report_text.partition(HEADING)
        following = rest.find("\n## ")
        after = rest[following + 1 :] if following >= 0 else ""
        return before + section + ("\n" + after if after else "")
    marker = "## Test runs"
    if marker in report_text:
        before, _, after = report_text.partition(marker)
        return before + section + "\n" + marker + after
    return report_text.rstrip("\n") + "\n\n" + section


def run_section() -> bool:
    """Run the cases, write the section into the report; True when every case held."""
    outcomes, summary, seconds = run_cases()
    section = render(outcomes, summary, seconds)
    REPORT.write_text(replace_section(REPORT.read_text() if REPORT.exists() else "", section))
    return all(not counts["failed"] and counts for counts in outcomes.values())


if __name__ == "__main__":
    held = run_section()
    print(f"wrote the security section of {REPORT.relative_to(ROOT)}")
    sys.exit(0 if held else 1)
