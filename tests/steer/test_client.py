"""steer.client against a real server (no worker: jobs stay queued): errors carry the server's
code and param; chat, streaming chat, completion; idempotent create."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steer.client import SteerAPIError, SteerClient
from tests.api.conftest import running_api
from tests.api.helpers import VALID_JSONL

MESSAGES = [{"role": "user", "content": "2+2="}]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[SteerClient]:
    with running_api(tmp_path) as api, SteerClient(api.base_url) as steer:
        yield steer


def test_files_jobs_and_errors(client: SteerClient, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(VALID_JSONL)
    file = client.upload_file(path)
    assert file["status"] == "processed" and [f["id"] for f in client.list_files()] == [file["id"]]
    job = client.create_job(model="tiny-llama", training_file=file["id"], idempotency_key="k1")
    again = client.create_job(model="tiny-llama", training_file=file["id"], idempotency_key="k1")
    assert again["id"] == job["id"] and len(client.list_jobs()) == 1
    assert client.list_events(job["id"])[-1]["message"].startswith("Created fine-tuning job")
    assert client.cancel_job(job["id"])["status"] == "cancelled"
    assert [e["message"] for e in client.stream_events(job["id"])][-1] == "The job was cancelled"
    with pytest.raises(SteerAPIError) as bad:
        client.create_job(model="tiny-llama", training_file=file["id"], method={"type": "nope"})
    assert bad.value.status == 400 and bad.value.param and "method" in bad.value.param
    with pytest.raises(SteerAPIError) as missing:
        client.get_job("ftjob-nope")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(ValueError, match="no result file"):
        client.metrics_csv(client.get_job(job["id"]))


def test_generation(client: SteerClient) -> None:
    whole = client.chat("tiny-llama", MESSAGES, max_tokens=8, temperature=0)
    assert "".join(client.stream_chat("tiny-llama", MESSAGES, max_tokens=8, temperature=0)) == whole
    assert isinstance(client.complete("tiny-llama", "1+1=", max_tokens=4, temperature=0), str)
    assert "tiny-llama" in client.models()
