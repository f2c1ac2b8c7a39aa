"""Exit codes of ``python -m steering_core.cli``: the worker maps them to failure types."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL_ERROR = 1  # a bug or platform fault: retrying may help, the user cannot fix it
    USER_ERROR = 2  # bad spec or data: the message says what to fix (argparse uses 2 as well)
    OUT_OF_MEMORY = 3  # the run did not fit: smaller batch / sequence length / ZeRO offload
    CANCELLED = 4  # stopped on request (SIGTERM / SIGINT) at a step boundary
    PAUSED = 5  # paused on request (the pause file appeared): checkpoint saved, then stopped
