"""The command line's exit codes, the same for every entry point: 2 and one line for a user error,
130 for Ctrl-C, 1 for a closed pipe (`python -m engine runs | head`)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from engine.errors import UserError


def run_command(command: Callable[[], int]) -> int:
    try:
        return int(command())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
