"""The one base class of every error raysweep reports to a user.

Each stage keeps its own subclass (ConfigError, DataError, StorageError, ...) so that code and
tests can tell them apart, but the CLI catches only `RaysweepError` and prints its message as one
line. Anything else that escapes is a bug, not bad input, and the CLI says where its traceback is.
A message must name what is wrong (the key, the file and row, the URI in redacted form) and must
never contain a secret.
"""

from __future__ import annotations


class RaysweepError(Exception):
    """A user-facing error: its message is one line the CLI prints as it is."""


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type name if it has none): what a one-line error
    may quote of an error from a library, whose message can run to many lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
