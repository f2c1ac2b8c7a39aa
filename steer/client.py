"""A small typed Python client for the service: files, jobs, events, adapters, generation.

    from steer.client import SteerClient
    client = SteerClient("http://127.0.0.1:8000", api_key="sk-steer-...")
    file = client.upload_file("train.jsonl")
    job = client.create_job(model="smollm2-135m-instruct", training_file=file["id"],
                            method={"type": "post_block"})
    for event in client.stream_events(job["id"]):
        print(event["message"])
    client.download_adapter(client.get_job(job["id"])["fine_tuned_model"], "adapter/")
    print(client.chat(job_adapter_id, [{"role": "user", "content": "Hi"}]))

Every error answer becomes :class:`SteerAPIError` carrying the server's ``message``, ``code``
and ``param``. Only ``httpx`` is needed (no torch).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


class SteerAPIError(Exception):
    def __init__(self, status: int, message: str, code: str | None, param: str | None):
        super().__init__(f"{status} {code or 'error'}: {message}")
        self.status, self.message, self.code, self.param = status, message, code, param


class SteerClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SteerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------
    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"message": response.text[:500] or response.reason_phrase}
            raise SteerAPIError(
                response.status_code,
                error.get("message", ""),
                error.get("code"),
                error.get("param"),
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._check(self.http.request(method, path, **kwargs)).json()
        return result

    def _sse(self, method: str, path: str, **kwargs: Any) -> Iterator[tuple[str, str]]:
        """(event name, data) pairs of a server-sent event stream."""
        with self.http.stream(method, path, timeout=None, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            name, data = "message", []
            for line in response.iter_lines():
                if not line:
                    if data:
                        yield name, "\n".join(data)
                    name, data = "message", []
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())

    # -- files -----------------------------------------------------------------------------
    def upload_file(self, path: str | Path, purpose: str = "fine-tune") -> dict[str, Any]:
        path = Path(path)
        with path.open("rb") as handle:
            return self._json(
                "POST", "/v1/files", data={"purpose": purpose}, files={"file": (path.name, handle)}
            )

    def list_files(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/files")["data"])

    def get_file(self, file_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/files/{file_id}")

    def delete_file(self, file_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/files/{file_id}")

    # -- jobs ------------------------------------------------------------------------------
    def create_job(self, *, idempotency_key: str | None = None, **body: Any) -> dict[str, Any]:
        """POST the job body as given: ``model``, ``training_file``, ``method``, ``compute``
        (``{"gpus", "processes", "deepspeed"}``), ... (the API's own field names)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/fine_tuning/jobs", json=body, headers=headers)

    def list_jobs(self, limit: int = 20, after: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return list(self._json("GET", "/v1/fine_tuning/jobs", params=params)["data"])

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/fine_tuning/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")

    def pause_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/fine_tuning/jobs/{job_id}/pause")

    def resume_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/fine_tuning/jobs/{job_id}/resume")

    def list_events(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them."""
        path = f"/v1/fine_tuning/jobs/{job_id}/events"
        return list(self._json("GET", path, params={"limit": limit})["data"])

    def stream_events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Every event of the job, oldest first, live, until the job has finished."""
        path = f"/v1/fine_tuning/jobs/{job_id}/events"
        for name, data in self._sse("GET", path, params={"stream": "true"}):
            if name == "done":
                return
            if name == "error":  # the key was revoked, or the registry went away
                error = json.loads(data)["error"]
                status = 401 if error.get("code") == "invalid_api_key" else 503
                raise SteerAPIError(status, error["message"], error.get("code"), None)
            yield json.loads(data)

    def list_checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints")["data"])

    def metrics_csv(self, job: dict[str, Any]) -> str:
        """The finished job's result file as CSV text: step, train_loss, train_accuracy,
        valid_loss, valid_mean_token_accuracy (OpenAI's columns)."""
        if not job.get("result_files"):
            raise ValueError(f"job {job['id']} has no result file (status {job['status']})")
        response = self.http.get(f"/v1/files/{job['result_files'][0]}/content")
        return self._check(response).text

    # -- adapters --------------------------------------------------------------------------
    def list_adapters(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/adapters", params={"limit": limit})["data"])

    def get_adapter(self, reference: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/adapters/{reference}")

    def download_adapter(self, reference: str, dest: str | Path) -> Path:
        """Unpack the adapter into ``dest``; every file is checked against the sha256 the
        registry stored for it. Returns the adapter's directory."""
        adapter = self.get_adapter(reference)
        response = self._check(self.http.get(f"/v1/adapters/{reference}/content"))
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            tar.extractall(dest, filter="data")
        root = dest / f"{adapter['name']}-v{adapter['version']}"
        for name, expected in (adapter.get("files") or {}).items():
            actual = hashlib.sha256((root / name).read_bytes()).hexdigest()
            if actual != expected:
                raise SteerAPIError(0, f"{name}: sha256 {actual} != {expected}", "corrupt", None)
        return root

    def export_adapter(
        self, reference: str, export_format: str, *, drop_layer_0: bool = False
    ) -> tuple[str, bytes]:
        """The adapter in another tool's format (``layer_tensors``, ``control_vector_gguf``,
        ``peft_lora``): the server's file name for it and its bytes, checked against the
        sha256 the server sent."""
        params: dict[str, Any] = {"format": export_format}
        if drop_layer_0:
            params["drop_layer_0"] = "true"
        response = self._check(self.http.get(f"/v1/adapters/{reference}/export", params=params))
        expected = response.headers.get("X-Content-SHA256")
        actual = hashlib.sha256(response.content).hexdigest()
        if expected is not None and actual != expected:
            raise SteerAPIError(0, f"export: sha256 {actual} != {expected}", "corrupt", None)
        disposition = response.headers.get("Content-Disposition", "")
        _, _, filename = disposition.partition('filename="')
        filename = Path(filename.rstrip('"')).name  # never a path the server chose
        if filename in ("", ".", ".."):
            filename = f"{reference}-{export_format}".replace("/", "_")
        return filename, response.content

    # -- generation --------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [m["id"] for m in self._json("GET", "/v1/models")["data"]]

    def chat(self, model: str, messages: list[dict[str, str]], **options: Any) -> str:
        body = {"model": model, "messages": messages, **options}
        answer = self._json("POST", "/v1/chat/completions", json=body)
        return str(answer["choices"][0]["message"]["content"])

    def complete(self, model: str, prompt: str, **options: Any) -> str:
        answer = self._json(
            "POST", "/v1/completions", json={"model": model, "prompt": prompt, **options}
        )
        return str(answer["choices"][0]["text"])

    def stream_chat(
        self, model: str, messages: list[dict[str, str]], **options: Any
    ) -> Iterator[str]:
        body = {"model": model, "messages": messages, "stream": True, **options}
        for _, data in self._sse("POST", "/v1/chat/completions", json=body):
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]
                raise SteerAPIError(500, error["message"], error.get("code"), None)
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                yield piece
