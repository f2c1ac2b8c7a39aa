"""``models.list``, ``models.retrieve`` and ``models.delete`` through the official ``openai``
package: base models and the caller's adapters (by id or ``name@version``); deleting an adapter
removes it and its files; a base model cannot be deleted; another tenant's adapter is not
found."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.conftest import running_api
from tests.api.helpers import Api, register_adapter


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[Api, openai.OpenAI]]:
    with running_api(tmp_path) as api:  # no keys: every caller is the default tenant
        yield api, openai.OpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)


def test_retrieve_and_delete_models(served: tuple[Api, openai.OpenAI]) -> None:
    api, client = served
    row = register_adapter(api, "tone", files={"steering.safetensors": b"x" * 10})
    files = api.settings.adapters_dir / "default" / "tone" / "v1"
    assert files.is_dir()

    base = client.models.retrieve("tiny-llama")
    assert (base.id, base.owned_by, base.model_extra["kind"]) == ("tiny-llama", "system", "base")
    for reference in (row["id"], "tone@1", "tone"):
        adapter = client.models.retrieve(reference)
        assert adapter.id == row["id"] and adapter.owned_by == "default"
        assert adapter.model_extra["name"] == "tone@1"
        assert adapter.model_extra["base_model"] == "tiny-llama"
    assert row["id"] in [model.id for model in client.models.list()]

    theirs = register_adapter(api, "theirs", tenant="other", files={"steering.safetensors": b"y"})
    for reference in (theirs["id"], "theirs@1"):
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(reference)
        with pytest.raises(openai.NotFoundError):
            client.models.delete(reference)
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("tone@2")
    assert "tone@2" in str(missing.value)
    with pytest.raises(openai.BadRequestError) as base_delete:
        client.models.delete("tiny-llama")
    assert "catalogue" in str(base_delete.value)

    deleted = client.models.delete("tone@1")
    assert (deleted.id, deleted.deleted) == (row["id"], True)
    assert not files.exists()
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(row["id"])
    with pytest.raises(openai.NotFoundError):
        client.models.delete("tone@1")
