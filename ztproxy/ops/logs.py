"""structlog configuration: JSON lines to stderr (or a readable console format when
stderr is a terminal), with a redaction processor as the second line of defence.

The first line is that log calls pass allow-listed fields only (ids, codes, names,
digests). The redaction processor then masks any field whose name suggests a secret
and any value that looks like a JWT or a PEM private key, wherever it comes from.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = re.compile(
    r"(token|authorization|cookie|password|secret|private|jwt|bearer)", re.IGNORECASE
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
MASK = "[secure]"


_KEY_VERDICTS: dict[str, bool] = {}


class LineLogger:
    """structlog's final logger: each rendered line, newline included, goes to the
    file in one write() and one flush, under a lock shared by the process's threads
    (print() writes the text and the newline apart). Across workers the supervisor
    relays each worker's stream line by line (`server.logrelay`)."""

    _lock = threading.Lock()

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file

    def msg(self, message: str) -> None:
        file = self._file if self._file is not None else sys.stderr
        with self._lock:
            file.write(message + "\n")
            file.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


def _line_logger(*_args: Any) -> LineLogger:
    return LineLogger()


def _secret_key(key: str) -> bool:
    """Is a field of this name masked whatever its value? Field names are few, so the
    verdict is kept (bounded: names come from code, not from requests)."""
    verdict = _KEY_VERDICTS.get(key)
    if verdict is None:
        verdict = (
            key != "event"
            and bool(_SECRET_KEYS.search(key))
            and not key.endswith(("_sha256", "_digest"))
        )
        if len(_KEY_VERDICTS) < 4096:
            _KEY_VERDICTS[key] = verdict
    return verdict


def _suspect(text: str) -> bool:
    return "eyJ" in text or "-----BEGIN" in text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if not _suspect(value):
            return value
        if _PEM_KEY.search(value):
            return MASK
        return _JWT.sub(MASK, value)
    if isinstance(value, dict):
        return {
            k: MASK if isinstance(k, str) and _secret_key(k) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if _secret_key(key):
            event[key] = MASK
        elif type(value) is str:
            if _suspect(value):  # cheap substring tests; the regexes run on suspects only
                event[key] = _scrub(value)
        elif isinstance(value, (dict, list, tuple)):
            event[key] = _scrub(value)
    return event


_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("ztproxy_quiet_logs", default=False)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Drop log events made inside this block (and tasks and threads started from
    it): a preflight whose failure is raised as one line says it once, not twice."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """No log output at all inside this block, whatever structlog's configuration (for a
    command such as check-config, whose answer is its own output). The configuration
    is put back afterwards, so a caller in the same process keeps its own."""
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[_drop_all])
    try:
        yield
    finally:
        structlog.configure(processors=processors)


def _drop_all(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    raise structlog.DropEvent


def _drop_when_quiet(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _QUIET.get():
        raise structlog.DropEvent
    return event


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            _drop_when_quiet,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_line_logger,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
