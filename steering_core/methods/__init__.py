"""Methods behind a registry. Every module in this package is imported so that it registers."""

from __future__ import annotations

import importlib
import pkgutil

from steering_core.methods.base import (
    AttachedMethod,
    get_method_handler,
    register_method,
    registered_methods,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AttachedMethod", "get_method_handler", "register_method", "registered_methods"]
