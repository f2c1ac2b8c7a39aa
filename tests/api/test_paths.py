"""No user-controlled text reaches the file system: ids, names, file parameters and upload
filenames carrying traversal attempts are answered 4xx (never 5xx) and read or write nothing
outside the registry's own content-addressed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.helpers import FILES, JOBS, Api, assert_client_error, assert_error

ATTEMPTS = [
    "../registry.db",
    "..%2Fregistry.db",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "..\\..\\registry.db",
    "file-abc%00.jsonl",
    "adapter@1%2F..%2F..",
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def seeded(api: Api) -> Api:
    api.job_ok()  # a file and a job exist, so a lookup has something to confuse
    (api.settings.data_dir / "secret.txt").write_text("not for download")
    return api


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_traversal_in_ids_is_a_plain_not_found(seeded: Api, attempt: str) -> None:
    root = seeded.settings.data_dir.parent
    job_id = seeded.get_json(JOBS)["data"][0]["id"]
    before = _tree(root)
    for path in (
        f"{FILES}/{attempt}",
        f"{FILES}/{attempt}/content",
        f"{JOBS}/{attempt}",
        f"{JOBS}/{attempt}/events",
        f"{JOBS}/{attempt}/checkpoints",
        f"{JOBS}/{attempt}/checkpoints/{attempt}/content",
        f"{JOBS}/{job_id}/checkpoints/{attempt}/content",
        f"/v1/adapters/{attempt}",
        f"/v1/adapters/{attempt}/content",
    ):
        response = seeded.client.get(path)
        error = assert_client_error(response)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "not for download" not in response.text and "root:" not in response.text, path
        assert error["message"]
    for response in (
        seeded.client.delete(f"{FILES}/{attempt}"),
        seeded.client.post(f"{JOBS}/{attempt}/cancel"),
        seeded.client.post(f"{JOBS}/{attempt}/pause"),
        seeded.client.post(f"{JOBS}/{attempt}/resume"),
        seeded.client.delete(f"/v1/adapters/{attempt}"),
    ):
        assert_client_error(response)
    assert _tree(root) == before  # nothing created, nothing deleted


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_traversal_as_a_training_file_or_suffix_is_refused(seeded: Api, attempt: str) -> None:
    root = seeded.settings.data_dir.parent
    before = _tree(root)
    response = seeded.create_job({"model": "tiny-llama", "training_file": attempt})
    assert_error(response, 400, param="training_file")
    file_id = seeded.get_json(FILES)["data"][0]["id"]
    response = seeded.create_job(
        {"model": "tiny-llama", "training_file": file_id, "suffix": attempt}
    )
    assert_error(response, 400, param="suffix")
    response = seeded.create_job({"model": attempt, "training_file": file_id})
    assert_error(response, 400, param="model")
    assert len(seeded.get_json(JOBS)["data"]) == 1
    assert _tree(root) == before


@pytest.mark.parametrize("attempt", [a for a in ATTEMPTS if "%" not in a])
def test_upload_filenames_never_become_paths(api: Api, attempt: str) -> None:
    root = api.settings.data_dir.parent
    api.settings.ensure_dirs()
    before = _tree(root)
    body = api.upload_ok(filename=attempt)
    assert "/" not in body["filename"]
    new = {root / p for p in _tree(root) - before}
    new_files = [p for p in new if p.is_file()]
    assert len(new_files) == 1, new  # one file, in the content-addressed store
    stored = new_files[0]
    assert stored.is_relative_to(api.settings.files_dir)
    assert len(stored.stem) == 64 and stored.suffix == ".jsonl"  # its sha256, not its name
