"""One way for every command-line entry point to fail: expected errors in one line, exit 2.

A user who misspells a key, points at a missing file or feeds a damaged checkpoint gets
``error: <what went wrong and what to do>`` on stderr and exit status 2, not a 40-line
traceback through RecBole. Anything else is a bug and keeps its traceback (exit 1).
``BBQREC_TRACEBACK=1`` shows the traceback of expected errors too (for bug reports).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from recbole_bbqrec.errors import ConfigKeyError, UserError

T = TypeVar("T")

# Errors caused by the input rather than by the code. ValueError covers our own classes (all
# UserError subclasses are ValueErrors) and the plain ValueErrors that name a bad input.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError,
                                                     NotADirectoryError, IsADirectoryError,
                                                     PermissionError, ConfigKeyError)
EXIT_USER_ERROR = 2


def one_line(err: BaseException) -> str:
    """An error's message on one line (KeyError's quotes removed, line breaks joined)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or \
        type(err).__name__


def run_cli(main: Callable[..., T], argv: list[str] | None = None) -> T:
    """Call ``main(argv)``; an expected error becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except EXPECTED_ERRORS as err:
        if os.environ.get("BBQREC_TRACEBACK"):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
