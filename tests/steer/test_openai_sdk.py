"""The official ``openai`` package, unchanged, against a real server: only ``base_url`` and the
key are set. Files, fine-tuning jobs, events, cancel, and steered chat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.api.conftest import running_api
from tests.api.helpers import VALID_JSONL

ADMIN = "adm-openai-0123456789"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[openai.OpenAI]:
    with running_api(tmp_path, auth="on", admin_key=ADMIN) as api:
        yield openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=ADMIN, max_retries=0)


def test_files_jobs_events_cancel(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(VALID_JSONL)
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose="fine-tune")
    assert file.id.startswith("file-") and file.filename == "train.jsonl"
    assert client.files.retrieve(file.id).bytes == len(VALID_JSONL)

    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file.id,
        method={"type": "post_block"},  # type: ignore[typeddict-item]  (ours; sent as given)
        seed=3,
    )
    assert job.status == "queued" and job.training_file == file.id and job.seed == 3
    assert [j.id for j in client.fine_tuning.jobs.list(limit=5).data] == [job.id]
    assert client.fine_tuning.jobs.retrieve(job.id).model == "tiny-llama"
    events = client.fine_tuning.jobs.list_events(job.id, limit=10).data
    assert events and events[-1].message.startswith("Created fine-tuning job")
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
    assert messages[0] == "The job was cancelled"

    with pytest.raises(openai.NotFoundError) as missing:
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    assert missing.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="gpt-4o", training_file=file.id)
    assert "gpt-4o" in str(bad.value)


def test_the_compute_block_goes_in_extra_body(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(VALID_JSONL)
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=file.id,
        extra_body={"compute": {"gpus": 2, "deepspeed": {"zero_stage": 2}}},
    )
    compute = client.fine_tuning.jobs.retrieve(job.id).model_extra["compute"]
    assert compute["processes"] == 2 and compute["deepspeed"]["zero_stage"] == 2
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(
            model="tiny-llama", training_file=file.id, extra_body={"compute": {"processes": 3}}
        )
    assert bad.value.body["param"] == "method.post_block.hyperparameters.batch_size"


def test_chat_completions_with_steering_strength(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "2+2="}]
    answer = client.chat.completions.create(
        model="tiny-llama",
        messages=messages,
        temperature=0,
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        stream=True,
        extra_body={"steering_strength": 0.5},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == answer.choices[0].message.content
    assert [m.id for m in client.models.list().data][:1] == ["smollm2-135m-instruct"]
