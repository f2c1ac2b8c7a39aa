"""The service's default models are the catalogue's: the registry names them again (it imports
nothing of the core), so this keeps the two lists one."""

from __future__ import annotations

from registry.settings import DEFAULT_MODELS, Settings
from steering_core.model.catalogue import CATALOGUE, SERVED_BY_DEFAULT, model_dimensions


def test_the_default_models_are_the_catalogues() -> None:
    assert DEFAULT_MODELS == SERVED_BY_DEFAULT
    assert Settings().models == SERVED_BY_DEFAULT
    assert set(CATALOGUE) <= set(DEFAULT_MODELS)
    for name in DEFAULT_MODELS:
        layers, hidden = model_dimensions(name)  # every default has known sizes
        assert layers > 0 and hidden > 0
