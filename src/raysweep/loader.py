"""The one config loader: YAML text -> plain values -> validated dataclasses.

`raysweep.config` (the sweep) and `raysweep.llm.config` (its `llm:` section) both build their
dataclasses with `from_dict` from here, so neither imports the other to share it, and every
section reports a bad value the same way: one `ConfigError` line naming the key path
(`recipe.epochs: expected an integer, got 'ten'`).

YAML is read defensively because a sweep file or a `--set` value is user input:
- aliases (`*name`) are refused outright. No shipped sweep uses them, and PyYAML expands them
  while building the value: a 600-byte "billion laughs" file took a minute and 3.5 GB here.
- the file must be UTF-8 text of a sane size; a binary or Latin-1 file is one line, not a
  UnicodeDecodeError.
- nesting deep enough to exhaust Python's stack is one line, not a RecursionError.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from raysweep.errors import RaysweepError

# A sweep file is a few kilobytes; anything this large is not one, and parsing it in pure Python
# would take seconds before saying so.
MAX_YAML_BYTES = 256 * 1024


class ConfigError(RaysweepError, ValueError):
    """A sweep file or override that does not validate: one line per problem, each naming its key path."""


def require(cond: bool, message: str) -> None:
    """A dataclass's `validate()` rule: `message` (relative key path first) when `cond` fails."""
    if not cond:
        raise ConfigError(message)


# --------------------------------------------------------------------------- YAML text -> values


class _AliasRefused(Exception):
    def __init__(self, line: int):
        self.line = line


class _Refused(Exception):
    """A YAML shape read silently wrong by PyYAML: (line, what)."""

    def __init__(self, line: int, what: str):
        self.line, self.what = line, what


# YAML 1.1 reads `010` as octal 8, `0x10` as 16 and `1:30` as 90 (base 60): a seed list `[010]`
# would run seed 8. Only plain decimal integers are numbers here; a leading zero is refused.
_ZERO_INT = re.compile(r"^[-+]?0[0-9_]+$")


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader (plain data only) that refuses aliases and reads `1e-3` as a number."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        # PyYAML keeps the later of two equal keys without a word: `recipe:` twice would drop
        # the first section whole.
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML's own error names an unhashable key
            if key in seen:
                raise _Refused(key_node.start_mark.line + 1, f"key {describe(key)} appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if _ZERO_INT.match(text):
            raise _Refused(node.start_mark.line + 1, f"{text} has a leading zero (YAML 1.1 reads it as an octal "
                                                     "number); write it without")
        return super().construct_yaml_int(node)


# YAML 1.1 (PyYAML) reads `1e-3` as the string '1e-3' because it wants a dot in the mantissa;
# every sweep writer means the number. Same pattern as PyYAML's own float resolver, dot optional.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
_SafeLoader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
                                       for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
# Decimal integers (leading zero included, so that construct_yaml_int can refuse it by name); 0x10,
# 0o10, 0b10 and 1:30 stay strings, which every int field refuses as "expected an integer". Checked
# before the float pattern, whose dot is optional.
_DECIMAL = re.compile(r"^[-+]?[0-9][0-9_]*$")
_SafeLoader.yaml_implicit_resolvers = {
    k: ([("tag:yaml.org,2002:int", _DECIMAL)] if k in "-+0123456789" else [])
    + [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:int"]
    for k, v in _SafeLoader.yaml_implicit_resolvers.items()}
_SafeLoader.add_constructor("tag:yaml.org,2002:int", _SafeLoader.construct_yaml_int)


# Flow brackets ([ {) open at once. PyYAML's scanner re-checks every open level at each token, so
# 100,000 of them took seconds before failing; a sweep file nests three or four.
MAX_FLOW_DEPTH = 100


def _flow_depth_exceeded(text: str) -> bool:
    """Whether `text` opens more than MAX_FLOW_DEPTH brackets at once (quotes ignored: a
    sweep's strings do not hold a hundred brackets)."""
    depth = 0
    for c in text:
        if c in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return True
        elif c in "]}" and depth:
            depth -= 1
    return False


def parse_yaml(text: str, where: str) -> Any:
    """The value of YAML `text`; a ConfigError starting with `where` if it cannot be read safely."""
    if _flow_depth_exceeded(text):
        raise ConfigError(f"{where}: nested more than {MAX_FLOW_DEPTH} levels deep, not a sweep file")
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - _SafeLoader is a SafeLoader
    except _AliasRefused as exc:
        raise ConfigError(f"{where}: line {exc.line}: YAML aliases (*name) are not supported; "
                          "write the value out") from None
    except _Refused as exc:
        raise ConfigError(f"{where}: line {exc.line}: {exc.what}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", "") or "").split())
        raise ConfigError(f"{where}:{line} is not valid YAML" + (f" ({problem})" if problem else "")) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply, not a sweep file") from None


def read_yaml_file(path: str | Path) -> Any:
    """The value of the YAML file at `path`, refusing what is not a small UTF-8 text file."""
    from raysweep.files import regular_file

    path = regular_file(path, "sweep", ConfigError)  # not a FIFO or /dev/zero: those block or never end
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB, not a sweep file")
    if b"\0" in raw:
        raise ConfigError(f"{path}: a binary file, not YAML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None
    return parse_yaml(text, str(path))


# --------------------------------------------------------------------------- values -> dataclasses


def describe(value: Any) -> str:
    """A value as an error line shows it: its repr, cut to 60 characters."""
    try:
        text = repr(value)
    except RecursionError:  # a self-referencing value; aliases are refused, but a caller may pass one
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the annotation `tp` and return it in that type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {describe(value)} fits none of {tp}")
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{path}: {describe(value)} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            # A scalar where a list is expected is a one-element list: `seeds: 0` means `[0]`.
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {describe(value)}")
        key_t, val_t = args or (Any, Any)
        return {_coerce(key_t, k, path): _coerce(val_t, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            # No field means anything by .inf or .nan: an infinite fraction or learning rate only
            # fails every cell later (or, worse, records meaningless results).
            if not math.isfinite(number):
                raise ConfigError(f"{path}: expected a finite number, got {describe(value)}")
            return number
        raise ConfigError(f"{path}: expected a number, got {describe(value)}")
    if tp is str:
        if isinstance(value, str):
            if "\0" in value:  # a path with one fails deep inside open() as "embedded null byte"
                raise ConfigError(f"{path}: holds a NUL byte")
            return value
        raise ConfigError(f"{path}: expected a string, got {describe(value)}")
    raise TypeError(f"{path}: unsupported annotation {tp!r}")  # a bug in a dataclass, not in the file


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and bad values.

    After construction the dataclass's own `validate()` (if any) checks cross-field rules;
    it raises ConfigError with a path relative to the dataclass, which is prefixed here.
    """
    where = path or "<top>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs, errors = {}, []
    for key, value in data.items():  # every bad key is reported, not only the first
        sub = f"{path}.{key}" if path else str(key)
        name = str(key).replace("-", "_")
        try:
            if name not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"{sub}: unknown key (known keys here: {known})")
            kwargs[name] = _coerce(hints[name], value, sub)
        except ConfigError as exc:
            errors.extend(str(exc).splitlines())
    if errors:  # one line each; a section's cross-field rules wait until its keys are right
        raise ConfigError("\n".join(errors))
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(f"{path}.{msg}" if path else msg) from None
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-YAML form of a config (tuples become lists so that it round-trips)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def url_problem(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """What is wrong with `url` in one phrase, or None: each malformed shape its own words, where
    urllib would raise ValueError ("Invalid IPv6 URL") or take it silently (no host, a port of 99999)."""
    if any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in url):
        return "holds a space or a control character"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced "[" (http://[::1)
        return f"is not a URL ({exc})"
    if parts.scheme.lower() not in schemes:
        return "is not an http(s) URL" if schemes == ("http", "https") else f"is not a {'/'.join(schemes)} URL"
    if not parts.hostname:
        return "names no host"
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number in 0..65535
    except ValueError:
        return f"has a port that is not a number in 1..65535 ({parts.netloc.rpartition(':')[2][:20]!r})"
    if parts.port == 0:
        return "has port 0"
    return None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides (values parsed as YAML) to a raw mapping.

    The result is validated like the file itself, so `--set recipe.epochs=ten` fails the
    same way a bad file would.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key.path=value")
        key, raw = item.split("=", 1)
        if "\0" in item:
            raise ConfigError(f"--set {describe(key)}: holds a NUL byte")
        if not raw.strip():
            # YAML reads "" as null, which would quietly mean the default (`data.path=` the bundled SST-5).
            raise ConfigError(f"--set {key}: empty value (write {key}=null to mean the default)")
        value = parse_yaml(raw, f"--set {key}: value {describe(raw)}")
        node = data
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = child
        node[parts[-1]] = value
    return data
