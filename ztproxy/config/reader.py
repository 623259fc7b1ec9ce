"""A small typed reader over parsed YAML that names the key path of every problem.

Each config section is parsed by a function `parse_<section>(node: Node) -> Section`
that reads typed values from a `Node`. A wrong value does not stop the parse: it is
recorded as "routes[2].upstream: not an http(s) URL" and a default is returned, so
that one run of `ztproxy check-config` lists every problem at once. `Node.finish()`
also reports keys that nobody read (typos must not be silently ignored), with the
closest known key ("did you mean").

`read_yaml` is the YAML reader every config file goes through: a key given twice in
one mapping is an error naming its key path (plain YAML loaders keep the last one,
so `user: none` written below `user: required` would silently win).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeAlias, TypeVar, overload

import yaml

from ..errors import ConfigError

T = TypeVar("T")

_MISSING: Any = object()
# Node has methods named str/bool/int; annotations inside it use these aliases.
_Str: TypeAlias = str
_Bool: TypeAlias = bool
_Int: TypeAlias = int


class Problems:
    """Collects problems across the whole config."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path or '<root>'}: {message}")


class Node:
    """A mapping (or a scalar) at a key path."""

    def __init__(
        self, value: Any, path: _Str = "", problems: Problems | None = None, base_dir: _Str = "."
    ) -> None:
        self.value = value
        self.path = path
        self.problems = problems if problems is not None else Problems()
        self.base_dir = base_dir
        self._read: set[_Str] = set()

    # -- navigation ---------------------------------------------------------------
    def _child_path(self, key: _Str | _Int) -> _Str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def error(self, message: _Str, key: _Str | _Int | None = None) -> None:
        self.problems.add(self._child_path(key) if key is not None else self.path, message)

    def is_mapping(self) -> _Bool:
        return isinstance(self.value, dict)

    def has(self, key: _Str) -> _Bool:
        return isinstance(self.value, dict) and key in self.value

    def _raw(self, key: _Str) -> Any:
        self._read.add(key)
        if not isinstance(self.value, dict):
            return _MISSING
        return self.value.get(key, _MISSING)

    def section(self, key: _Str, *, required: _Bool = False) -> Node:
        """A nested mapping; an absent optional section reads as an empty mapping."""
        raw = self._raw(key)
        path = self._child_path(key)
        if raw is _MISSING or raw is None:
            if required:
                self.problems.add(path, "is required")
            return Node({}, path, self.problems, self.base_dir)
        if not isinstance(raw, dict):
            self.problems.add(path, f"must be a mapping, not {type(raw).__name__}")
            return Node({}, path, self.problems, self.base_dir)
        return Node(raw, path, self.problems, self.base_dir)

    def items(self, key: _Str, *, required: _Bool = False) -> Iterator[Node]:
        """The elements of a list, each as a Node at `key[i]`."""
        raw = self._raw(key)
        path = self._child_path(key)
        if raw is _MISSING or raw is None:
            if required:
                self.problems.add(path, "is required")
            return
        if not isinstance(raw, list):
            self.problems.add(path, f"must be a list, not {type(raw).__name__}")
            return
        for i, item in enumerate(raw):
            yield Node(item, f"{path}[{i}]", self.problems, self.base_dir)

    # -- scalars ------------------------------------------------------------------
    def _typed(
        self, key: _Str, default: Any, required: _Bool, kinds: tuple[type, ...], kind_name: _Str
    ) -> Any:
        raw = self._raw(key)
        if raw is _MISSING or raw is None:
            if required:
                self.error("is required", key)
            return default
        if isinstance(raw, bool) and bool not in kinds:
            self.error(f"must be {kind_name}, not a boolean", key)
            return default
        if not isinstance(raw, kinds):
            self.error(f"must be {kind_name}, not {type(raw).__name__}", key)
            return default
        return raw

    @overload
    def str(self, key: _Str, default: _Str, *, required: _Bool = False) -> _Str: ...
    @overload
    def str(self, key: _Str, default: None = None, *, required: _Bool = False) -> _Str | None: ...

    def str(
        self, key: _Str, default: _Str | None = None, *, required: _Bool = False
    ) -> _Str | None:
        value: _Str | None = self._typed(key, default, required, (str,), "a string")
        if value is not None and isinstance(value, str) and value == "" and required:
            self.error("must not be empty", key)
        return value

    def bool(
        self,
        key: _Str,
        default: _Bool,
    ) -> _Bool:
        return bool(self._typed(key, default, False, (bool,), "true or false"))

    @overload
    def int(
        self,
        key: _Str,
        default: _Int,
        *,
        required: _Bool = False,
        min: _Int | None = None,
        max: _Int | None = None,
    ) -> _Int: ...  # noqa: A002
    @overload
    def int(
        self,
        key: _Str,
        default: None = None,
        *,
        required: _Bool = False,
        min: _Int | None = None,  # noqa: A002
        max: _Int | None = None,
    ) -> _Int | None: ...  # noqa: A002

    def int(
        self,
        key: _Str,
        default: _Int | None = None,
        *,
        required: _Bool = False,
        min: _Int | None = None,
        max: _Int | None = None,
    ) -> _Int | None:  # noqa: A002
        value: _Int | None = self._typed(key, default, required, (int,), "an integer")
        if isinstance(value, int) and value is not default:
            if min is not None and value < min:
                self.error(f"must be at least {min}", key)
                return default
            if max is not None and value > max:
                self.error(f"must be at most {max}", key)
                return default
        return value

    @overload
    def number(
        self,
        key: _Str,
        default: float,
        *,
        required: _Bool = False,
        min: float | None = None,  # noqa: A002
        max: float | None = None,
    ) -> float: ...  # noqa: A002
    @overload
    def number(
        self,
        key: _Str,
        default: None = None,
        *,
        required: _Bool = False,
        min: float | None = None,  # noqa: A002
        max: float | None = None,
    ) -> float | None: ...  # noqa: A002

    def number(
        self,
        key: _Str,
        default: float | None = None,
        *,
        required: _Bool = False,
        min: float | None = None,  # noqa: A002
        max: float | None = None,
    ) -> float | None:  # noqa: A002
        value: float | None = self._typed(key, default, required, (int, float), "a number")
        if isinstance(value, (int, float)) and value is not default:
            if min is not None and value < min:
                self.error(f"must be at least {min}", key)
                return default
            if max is not None and value > max:
                self.error(f"must be at most {max}", key)
                return default
            return float(value)
        return value

    def choice(self, key: _Str, choices: tuple[_Str, ...], default: _Str) -> _Str:
        value = self.str(key, default)
        if value not in choices:
            self.error(f"must be one of {', '.join(choices)}; got {value!r}", key)
            return default
        return str(value)

    def str_list(
        self, key: _Str, default: tuple[_Str, ...] = (), *, required: _Bool = False
    ) -> tuple[_Str, ...]:
        raw = self._raw(key)
        if raw is _MISSING or raw is None:
            if required:
                self.error("is required", key)
            return default
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            self.error(f"must be a list of strings, not {type(raw).__name__}", key)
            return default
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, str) or not item:
                self.problems.add(f"{self._child_path(key)}[{i}]", "must be a non-empty string")
                continue
            out.append(item)
        return tuple(out)

    def str_map(self, key: _Str) -> dict[_Str, _Str]:
        raw = self._raw(key)
        if raw is _MISSING or raw is None:
            return {}
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            self.error("must be a mapping of strings to strings", key)
            return {}
        return dict(raw)

    def raw(self, key: _Str, default: Any = None) -> Any:
        value = self._raw(key)
        return default if value is _MISSING else value

    @overload
    def path_value(
        self,
        key: _Str,
        *,
        required: _Bool = False,
        must_exist: _Bool = True,
        is_dir: _Bool = False,
        default: _Str,
    ) -> _Str: ...
    @overload
    def path_value(
        self,
        key: _Str,
        *,
        required: _Bool = False,
        must_exist: _Bool = True,
        is_dir: _Bool = False,
        default: None = None,
    ) -> _Str | None: ...

    def path_value(
        self,
        key: _Str,
        *,
        required: _Bool = False,
        must_exist: _Bool = True,
        is_dir: _Bool = False,
        default: _Str | None = None,
    ) -> _Str | None:
        """A file or directory path, resolved against the config file's directory.
        Secrets are always given as paths like this, never inline."""
        value = self.str(key, default, required=required)
        if not isinstance(value, str) or not value:
            return default if value is None else value
        resolved = (
            value if os.path.isabs(value) else os.path.normpath(os.path.join(self.base_dir, value))
        )
        if must_exist:
            if is_dir and not os.path.isdir(resolved):
                self.error(f"directory not found: {value}", key)
            elif not is_dir and not os.path.isfile(resolved):
                self.error(f"file not found: {value}", key)
        return resolved

    def parse(self, key: _Str, fn: Callable[[Any], T], message: _Str, default: T) -> T:
        """Read a string and convert it with `fn`; ValueError becomes a problem."""
        raw = self.str(key, None)
        if raw is None:
            return default
        try:
            return fn(raw)
        except ValueError:
            self.error(message, key)
            return default

    def finish(self, allowed_extra: tuple[_Str, ...] = ()) -> None:
        """Report keys present in this mapping that no parser read."""
        if not isinstance(self.value, dict):
            return
        known = sorted(self._read | set(allowed_extra))
        for key in self.value:
            if key not in self._read and key not in allowed_extra:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(f"unknown key{hint}", str(key))


# == the YAML file ============================================================================
def _duplicates(node: yaml.Node, path: str, out: list[str]) -> None:
    """Every key given twice in one mapping under `node`, as "key.path: ..." lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = key_node.value
            child = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if key in seen:
                out.append(
                    f"{child}: duplicate key (line {line}; first at line "
                    f"{seen[key]}); give each key once"
                )
            else:
                seen[key] = line
            _duplicates(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, f"{path}[{i}]", out)


def read_yaml(stream: IO[str] | str) -> Any:
    """Parse one YAML document safely (yaml.safe_load's types). Raises ConfigError
    listing every duplicate key with its key path; yaml.YAMLError for bad syntax."""
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems: list[str] = []
        _duplicates(node, "", problems)
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(node)
    finally:
        loader.dispose()
