"""One way for every command-line entry point to fail: expected errors in one line, exit 2.

A user who misspells a key, points at a missing file or feeds a damaged checkpoint gets
``error: <what went wrong and what to do>`` on stderr and exit status 2, not a 40-line
traceback through RecBole. Anything else is a bug and keeps its traceback (exit 1).
``BBQREC_TRACEBACK=1`` shows the traceback of expected errors too (for bug reports).
"""

from __future__ import annotations

import argparse
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


class StoreOnce(argparse.Action):
    """Store a flag's value; a second, different value is refused (exit 2). argparse would
    keep the last one silently, where Config refuses a key given twice with two values."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest, None)
        if previous is not None and previous != values:
            parser.error(f"{option_string} is given twice with different values "
                         f"({previous!r}, {values!r})")
        setattr(namespace, self.dest, values)


def parse_with_config_keys(parser: argparse.ArgumentParser, argv: list[str] | None
                           ) -> tuple[argparse.Namespace, list[str]]:
    """``parser``'s own flags, and the rest as config keys, each ``--key=value``.

    Anything else is refused (exit 2) rather than dropped: ``--epochs 5`` or a misspelt flag
    such as ``--out x`` would otherwise reach RecBole's Config, which only warns and ignores
    it, and the run would go ahead with the defaults. Flags are not abbreviated: a prefix
    such as ``--model`` for ``--models`` would be another key silently taken for it."""
    parser.allow_abbrev = False
    args, rest = parser.parse_known_args(argv)
    bad = [arg for arg in rest if not (arg.startswith("--") and "=" in arg)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (config keys go as "
                     f"--key=value, e.g. --epochs=5)")
    return args, rest
