"""Domain exceptions of the ML core. Torch-free.

Every error a user can cause derives from :class:`SteeringUserError`; the service maps those to
4xx answers and the CLI to its user-error exit code. Messages name the bad value and what would be
accepted.
"""

from __future__ import annotations


class SteeringError(Exception):
    """Base class of every error raised on purpose by steering_core."""


class SteeringUserError(SteeringError):
    """The caller asked for something invalid (bad config, wrong base model, bad file)."""

    code: str | None = None  # a finer failure code for a service to report, where one applies


class UnsupportedArchitectureError(SteeringUserError):
    """The model's architecture has no entry in the site table."""


class ConfigValidationError(SteeringUserError):
    """A method config does not fit the model it is attached to (layer out of range, ...)."""


class ArtifactError(SteeringUserError):
    """An adapter artifact is missing, corrupted, or does not match the base model."""


class UnknownModelError(SteeringUserError):
    """A model name is neither in the catalogue nor a local Hugging Face directory."""


class QuotaExceededError(SteeringUserError):
    """The run would exceed a limit set for its owner (``max_training_tokens``)."""

    code = "quota_exceeded"
