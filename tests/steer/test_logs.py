"""JSON log lines: one object per record, the job id as a field."""

from __future__ import annotations

import json
import logging

from steer.logs import JsonFormatter


def _format(message: str, *args: object, **extra: object) -> dict:
    record = logging.LogRecord("steer.worker", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return json.loads(JsonFormatter().format(record))


def test_job_id_is_taken_from_the_message_or_from_extra() -> None:
    entry = _format("job %s: lease lost", "ftjob-0123abcd")
    assert entry["job_id"] == "ftjob-0123abcd"
    assert entry["level"] == "warning" and entry["logger"] == "steer.worker"
    assert entry["message"] == "job ftjob-0123abcd: lease lost"
    assert entry["time"].endswith("+00:00")
    given = _format("GET /x 200", job_id="ftjob-feed", http={"status": 200})
    assert given["job_id"] == "ftjob-feed" and given["http"] == {"status": 200}
    assert "job_id" not in _format("no job here")


def test_exceptions_are_kept_in_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]
