"""/v1/files over HTTP: upload and validation, listing, content, deletion."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry import files as files_repo
from tests.api.helpers import (
    FILES,
    JOBS,
    VALID_JSONL,
    Api,
    assert_error,
    hold_upload_validation,
    jsonl,
)


def _stored_paths(api: Api) -> list[Path]:
    return sorted(p for p in api.settings.files_dir.rglob("*") if p.is_file())


def _stored_files(api: Api) -> list[str]:
    return [p.name for p in _stored_paths(api)]


# -- upload -------------------------------------------------------------------------------------


def test_upload_valid_prompt_completion(api: Api) -> None:
    response = api.upload(VALID_JSONL, filename="train.jsonl")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "file"
    assert body["id"].startswith("file-")
    assert body["purpose"] == "fine-tune"
    assert body["filename"] == "train.jsonl"
    assert body["bytes"] == len(VALID_JSONL)
    assert body["status"] == "processed"
    assert body["status_details"] is None
    assert body["format"] == "prompt_completion"
    assert body["n_examples"] == 3
    assert isinstance(body["created_at"], int) and body["created_at"] > 0


def test_upload_detects_chat_and_alpaca(api: Api) -> None:
    chat = jsonl(
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            }
        ]
        * 2
    )
    alpaca = jsonl([{"instruction": "Add", "input": "1 2", "output": "3"}])
    assert api.upload_ok(chat)["format"] == "chat"
    assert api.upload_ok(chat)["n_examples"] == 2
    assert api.upload_ok(alpaca)["format"] == "alpaca"


def test_upload_malformed_jsonl_is_stored_with_status_error(api: Api) -> None:
    content = b'{"prompt": "a", "completion": "b"}\n{not json\n'
    body = api.upload_ok(content)
    assert body["status"] == "error"
    assert "line 2" in body["status_details"]
    assert "json" in body["status_details"].lower()
    assert body["n_examples"] == 1
    # and it can still be fetched, with that status
    again = api.get_json(f"{FILES}/{body['id']}")
    assert again["status"] == "error"
    assert again["status_details"] == body["status_details"]


def test_upload_wrong_field_type_names_line_and_field(api: Api) -> None:
    content = b'{"prompt": "a", "completion": "b"}\n{"prompt": 5, "completion": "b"}\n'
    body = api.upload_ok(content)
    assert body["status"] == "error"
    assert "line 2" in body["status_details"]
    assert "prompt" in body["status_details"]


def test_upload_empty_file_is_an_error(api: Api) -> None:
    body = api.upload_ok(b"")
    assert body["status"] == "error"
    assert body["bytes"] == 0
    assert body["n_examples"] == 0
    assert "empty" in body["status_details"]


def test_upload_blank_lines_only_is_an_error(api: Api) -> None:
    body = api.upload_ok(b"\n\n   \n")
    assert body["status"] == "error"
    assert "empty" in body["status_details"]


def test_upload_invalid_utf8_is_an_error(api: Api) -> None:
    body = api.upload_ok(b"\xff\xfe garbage\n")
    assert body["status"] == "error"
    assert "utf-8" in body["status_details"].lower()


def test_upload_filename_is_reduced_to_its_base_name(api: Api) -> None:
    body = api.upload_ok(VALID_JSONL, filename="../../etc/passwd")
    assert body["filename"] == "passwd"
    assert not (api.settings.data_dir.parent / "etc").exists()


def test_upload_wrong_purpose(api: Api) -> None:
    response = api.upload(purpose="assistants")
    assert_error(response, 400, param="purpose", code="invalid_value", mentions=("assistants",))
    assert api.get_json(FILES)["data"] == []
    assert _stored_files(api) == []


def test_upload_missing_purpose(api: Api) -> None:
    response = api.client.post(FILES, files={"file": ("train.jsonl", VALID_JSONL)})
    assert_error(response, 400, param="purpose", mentions=("purpose",))


def test_upload_missing_file_part(api: Api) -> None:
    response = api.client.post(FILES, data={"purpose": "fine-tune"})
    assert_error(response, 400, param="file", mentions=("file",))


def test_upload_file_sent_as_a_plain_field(api: Api) -> None:
    response = api.client.post(FILES, data={"purpose": "fine-tune", "file": "not a file"})
    assert_error(response, 400, param="file")


def test_upload_json_body_instead_of_multipart(api: Api) -> None:
    response = api.client.post(FILES, json={"purpose": "fine-tune", "file": "abc"})
    error = assert_error(response, 400)
    assert error["param"] in {"file", "purpose"}


def test_upload_broken_multipart(api: Api) -> None:
    response = api.client.post(
        FILES, content=b"xx", headers={"content-type": "multipart/form-data; boundary=zz"}
    )
    assert_error(response, 400)


def test_upload_above_limit_is_413(make_api: Callable[..., Api]) -> None:
    small = make_api(max_upload_bytes=200)
    for size in (201, 5000):
        response = small.upload(b"x" * size)
        assert_error(response, 413, param="file", code="file_too_large", mentions=("200",))
    # nothing registered, no bytes and no temporary file left behind
    assert small.get_json(FILES)["data"] == []
    assert _stored_files(small) == []
    # at the limit is fine
    row = b'{"prompt": "a", "completion": "b"}\n'
    at_limit = row * (200 // len(row))
    assert small.upload_ok(at_limit)["status"] == "processed"


def test_same_content_twice_gives_two_ids_sharing_storage(api: Api) -> None:
    first = api.upload_ok(filename="a.jsonl")
    second = api.upload_ok(filename="b.jsonl")
    assert first["id"] != second["id"]
    assert (first["filename"], second["filename"]) == ("a.jsonl", "b.jsonl")
    assert len(_stored_files(api)) == 1
    # deleting one keeps the shared bytes for the other
    assert api.client.delete(f"{FILES}/{first['id']}").status_code == 200
    assert len(_stored_files(api)) == 1
    content = api.client.get(f"{FILES}/{second['id']}/content")
    assert content.status_code == 200
    assert content.content == VALID_JSONL
    # deleting the last one removes them
    assert api.client.delete(f"{FILES}/{second['id']}").status_code == 200
    assert _stored_files(api) == []


# -- list, retrieve, content ----------------------------------------------------------------------


def test_list_files_newest_first_with_pagination(api: Api) -> None:
    ids = [api.upload_ok(filename=f"f{i}.jsonl")["id"] for i in range(5)]
    newest_first = list(reversed(ids))

    everything = api.get_json(FILES)
    assert everything["object"] == "list"
    assert [f["id"] for f in everything["data"]] == newest_first
    assert everything["has_more"] is False
    assert everything["first_id"] == newest_first[0]
    assert everything["last_id"] == newest_first[-1]

    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if after is not None:
            params["after"] = after
        page = api.get_json(FILES, **params)
        pages += 1
        seen += [f["id"] for f in page["data"]]
        assert page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == newest_first
    assert pages == 3

    exact = api.get_json(FILES, limit=5)
    assert len(exact["data"]) == 5 and exact["has_more"] is False


def test_list_files_purpose_filter(api: Api) -> None:
    file_id = api.upload_ok()["id"]
    assert [f["id"] for f in api.get_json(FILES, purpose="fine-tune")["data"]] == [file_id]
    other = api.get_json(FILES, purpose="assistants")
    assert other["data"] == [] and other["has_more"] is False
    assert other["first_id"] is None and other["last_id"] is None


def test_list_files_bad_parameters(api: Api) -> None:
    assert_error(api.client.get(FILES, params={"limit": 0}), 400, param="limit")
    assert_error(api.client.get(FILES, params={"limit": "x"}), 400, param="limit")
    assert_error(api.client.get(FILES, params={"after": "file-nope"}), 404, code="not_found")


def test_retrieve_file(api: Api) -> None:
    uploaded = api.upload_ok()
    assert api.get_json(f"{FILES}/{uploaded['id']}") == uploaded


def test_retrieve_unknown_file(api: Api) -> None:
    assert_error(
        api.client.get(f"{FILES}/file-nope"), 404, code="not_found", mentions=("file-nope",)
    )


def test_file_content_is_the_uploaded_bytes(api: Api) -> None:
    content = VALID_JSONL + b"\n" + jsonl([{"prompt": "é ☃", "completion": "ü"}])
    file_id = api.upload_ok(content, filename="mine.jsonl")["id"]
    response = api.client.get(f"{FILES}/{file_id}/content")
    assert response.status_code == 200
    assert response.content == content
    assert "mine.jsonl" in response.headers["content-disposition"]


def test_content_of_unknown_file(api: Api) -> None:
    assert_error(api.client.get(f"{FILES}/file-nope/content"), 404, code="not_found")


@pytest.mark.parametrize("damage", ["removed", "truncated"])
def test_content_whose_bytes_are_gone_is_named_not_an_internal_error(api: Api, damage: str) -> None:
    """The bytes were lost under the row (a disk fault, a delete racing an upload before the
    content lock): the answer was a bare 500 ``internal_error`` from the file server."""
    file_id = api.upload_ok()["id"]
    (path,) = _stored_paths(api)
    if damage == "removed":
        path.unlink()
    else:
        path.write_bytes(VALID_JSONL[:10])
    response = api.client.get(f"{FILES}/{file_id}/content")
    assert_error(response, 500, code="file_corrupted", mentions=(file_id,))


# -- delete ---------------------------------------------------------------------------------------


def test_delete_file(api: Api) -> None:
    file_id = api.upload_ok()["id"]
    response = api.client.delete(f"{FILES}/{file_id}")
    assert response.status_code == 200
    assert response.json() == {"id": file_id, "object": "file", "deleted": True}
    assert_error(api.client.get(f"{FILES}/{file_id}"), 404, code="not_found")
    assert_error(api.client.get(f"{FILES}/{file_id}/content"), 404, code="not_found")
    assert_error(api.client.delete(f"{FILES}/{file_id}"), 404, code="not_found")
    assert api.get_json(FILES)["data"] == []
    assert _stored_files(api) == []


def test_delete_unknown_file(api: Api) -> None:
    assert_error(api.client.delete(f"{FILES}/file-nope"), 404, code="not_found")


def test_delete_file_of_a_queued_job_conflicts_until_cancelled(api: Api) -> None:
    training = api.upload_ok()["id"]
    validation = api.upload_ok(filename="valid.jsonl")["id"]
    job = api.job_ok(training, validation_file=validation)

    for file_id in (training, validation):
        error = assert_error(api.client.delete(f"{FILES}/{file_id}"), 409, code="conflict")
        assert job["id"] in error["message"]
        assert api.get_json(f"{FILES}/{file_id}")["id"] == file_id

    cancelled = api.client.post(f"{JOBS}/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text

    for file_id in (training, validation):
        assert api.client.delete(f"{FILES}/{file_id}").status_code == 200
        assert_error(api.client.get(f"{FILES}/{file_id}"), 404, code="not_found")
    after = api.get_json(f"{JOBS}/{job['id']}")
    assert after["status"] == "cancelled"
    assert after["training_file"] == training
    assert after["validation_file"] == validation


def test_an_announced_oversize_upload_is_refused_before_its_body_is_read(
    make_api: Callable[..., Api],
) -> None:
    """A client announcing 1 GB gets 413 at once: the server answers before any body is sent."""
    small = make_api(max_upload_bytes=1000)
    with socket.create_connection((small.client.base_url.host, small.client.base_url.port)) as s:
        s.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n"
        )
        s.settimeout(10)
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "file_too_large" in answer and "1000 bytes" in answer
    assert small.get_json(FILES)["data"] == []


def test_other_requests_are_answered_while_an_upload_is_validated(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation (and hashing, and the database) used to run on the event loop inside the
    ``async`` upload route: while a large file was validated, no other request was answered.
    Here validation waits until another request has been answered; on the event loop it would
    wait forever."""
    held = hold_upload_validation(monkeypatch, timeout=30)
    result: dict[str, Any] = {}
    uploader = threading.Thread(target=lambda: result.update(answer=api.upload(VALID_JSONL)))
    uploader.start()
    try:
        assert held.reached.acquire(timeout=30), "the upload never reached validation"
        listing = httpx.get(f"{api.base_url}{FILES}", timeout=10)
        assert listing.status_code == 200
    finally:
        held.release.set()
        uploader.join(timeout=30)
    assert result["answer"].status_code == 200, result["answer"].text
    assert result["answer"].json()["status"] == "processed"


def test_a_delete_racing_an_upload_of_the_same_bytes_leaves_them_stored(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads of the same bytes share one content-addressed file, removed by the delete of its
    last row. A delete that had found no other row, then removed the file just after an upload
    of the same bytes had been registered, left that upload pointing at nothing. Here the delete
    pauses between its check and its removal while the upload runs (before, the upload finished
    meanwhile; now it waits for the delete's lock on the content, then stores the bytes)."""
    api = make_api("postgres")
    first = api.upload_ok()
    checked, release = threading.Event(), threading.Event()
    storage_is_shared = files_repo.storage_is_shared

    def paused_after_the_check(session: Any, record: Any) -> bool:
        shared = storage_is_shared(session, record)
        checked.set()
        release.wait(timeout=30)
        return shared

    monkeypatch.setattr(files_repo, "storage_is_shared", paused_after_the_check)
    answers: dict[str, httpx.Response] = {}
    deleter = threading.Thread(
        target=lambda: answers.update(
            delete=httpx.delete(f"{api.base_url}{FILES}/{first['id']}", timeout=60)
        )
    )
    deleter.start()
    try:
        assert checked.wait(timeout=30), "the delete never checked for other rows"
        uploader = threading.Thread(target=lambda: answers.update(upload=api.upload()))
        uploader.start()
        uploader.join(timeout=3)  # the old code answered the upload within this
    finally:
        release.set()
    deleter.join(timeout=60)
    uploader.join(timeout=60)
    assert answers["delete"].status_code == 200, answers["delete"].text
    assert answers["upload"].status_code == 200, answers["upload"].text
    second = answers["upload"].json()
    content = httpx.get(f"{api.base_url}{FILES}/{second['id']}/content", timeout=30)
    assert content.status_code == 200, content.text
    assert content.content == VALID_JSONL
