"""Process-wide logging for every ``steer`` process: plain text for a terminal, or one JSON
object per line (``STEER_LOG_FORMAT=json``) for a log pipeline, with the job id as a field
whenever a record concerns a job."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

JOB_ID = re.compile(r"ftjob-[0-9a-f]+")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in record.__dict__.items():  # fields given with extra={...}
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if entry.get("job_id") is None and (found := JOB_ID.search(message)):
            entry["job_id"] = found.group(0)
        if entry.get("job_id") is None:
            entry.pop("job_id", None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
