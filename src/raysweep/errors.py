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


# --------------------------------------------------------------------------- masking secrets

import os  # noqa: E402 - the masking below is the only user
import re  # noqa: E402

# Environment variables whose values are secrets (OPENAI_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ...).
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.I)
# Values shaped like a credential whatever variable or file they came from, and the value after
# an HTTP auth scheme: a server's 401 may echo the key it was sent ("Incorrect API key provided:
# Bearer sk-...").
_SHAPED = re.compile(r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{8,}|(?:AKIA|ASIA)[0-9A-Z]{16}|ghp_[A-Za-z0-9]{20,}"
                     r"|github_pat_[A-Za-z0-9_]{20,}|hf_[A-Za-z0-9]{20,}|xox[bp]-[A-Za-z0-9-]{10,})")
# The value must hold a digit: "Token authentication is enabled" is a sentence, not a credential.
_AUTH = re.compile(r"\b(Bearer|Token|Basic)(\s+)(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{8,}")
_remembered: set[str] = set()  # secrets this process read from files (an LLM key file, the Ray token)


def remember_secret(value: str | None) -> None:
    """Mask `value` from now on in every line raysweep prints or logs (a key read from a file is
    in no environment variable, yet a server may echo it)."""
    if value and len(value) >= 8:
        _remembered.add(value)


def _is_value(text: str) -> bool:
    """Whether an environment value is masked: 8 characters or more and not a plain word (a
    variable named *_KEY may hold `name` or `accept`, and masking a word rewrites sentences)."""
    return len(text) >= 8 and not re.fullmatch(r"[A-Za-z]{1,19}", text)


def secret_values() -> list[str]:
    """Every value masked now: secret-named environment variables' and remembered ones, longest first."""
    found = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and _is_value(v)} | _remembered
    return sorted(found, key=len, reverse=True)


def mask_values(text: str, secrets) -> str:
    """`text` with each of `secrets` replaced by *** where it stands as a value (not inside a
    longer word: masking `user` must leave `username` alone), and credential-shaped values too."""
    for secret in secrets:
        if secret and secret in text:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    text = _AUTH.sub(lambda m: f"{m[1]}{m[2]}***", text)
    return _SHAPED.sub("***", text)


def mask(text: str) -> str:
    """The one masking every error line, stage line and log line goes through."""
    return mask_values(text, secret_values())
