"""Structured logging: JSON lines on stdout for shipping, readable output on a terminal.

Every line carries an event name and the keys bound with :func:`bind` (agent, client_id,
host, pid, config ...). Keys are bound through context variables, so a task started after
binding inherits them. What libraries log through the standard ``logging`` module (aiohttp's
"Error handling request" with its traceback, asyncio's warnings) is rendered the same way:
one JSON line, its traceback in the ``exception`` key, never a bare traceback on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

from shared.core.errors import mask_dsns
from shared.core.settings import Settings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _mask_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """No DSN password reaches a log line, whichever value carries it."""
    for key, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[key] = mask_dsns(value)
    return event


class _Tee:
    """Writes each log line to the stream and, appended and flushed, to a file."""

    def __init__(self, stream: Any, path: Path) -> None:
        self.stream = stream
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        self.file.write(text)
        return int(self.stream.write(text))

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()

    def isatty(self) -> bool:
        return False  # no colour codes in the file


def configure_logging(settings: Settings, stream: Any = None, also_to: Path | None = None) -> None:
    """Set up structlog once per process according to ``log_format`` and ``log_level``;
    ``also_to`` a file that gets every line too (``ipp-agent --log-dir``)."""
    out = stream if stream is not None else sys.stdout
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    if also_to is not None:
        out = _Tee(out, also_to)
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    level = _LEVELS[settings.log_level.lower()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=out),  # one write per line, flushed
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(out, renderer, level)


def _route_stdlib_logging(out: Any, renderer: Any, level: int) -> None:
    """The root logger of ``logging`` writes through the same renderer to the same stream."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)


def bind(**keys: Any) -> None:
    """Bind keys to every later log line of this task and the tasks it starts."""
    structlog.contextvars.bind_contextvars(**keys)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` becomes the ``component`` key when given."""
    # Initial values keep the proxy lazy: a module-level logger created at import time
    # still follows the configuration made later by configure_logging().
    return structlog.get_logger(component=name) if name else structlog.get_logger()
