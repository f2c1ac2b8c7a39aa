"""Settings read from the environment: the generation device and precision are checked where
they are read, naming the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from registry.settings import Settings


def test_generation_device_and_dtype_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEER_GENERATION_DEVICE", "cuda:1")
    monkeypatch.setenv("STEER_GENERATION_DTYPE", "float16")
    settings = Settings()
    assert (settings.generation_device, settings.generation_dtype) == ("cuda:1", "float16")
    assert Settings(generation_device="auto").generation_device == "auto"


@pytest.mark.parametrize(
    ("field", "value"), [("generation_device", "gpu"), ("generation_dtype", "float64")]
)
def test_a_bad_generation_setting_names_itself(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})
