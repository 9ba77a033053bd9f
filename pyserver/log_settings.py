"""The process's log settings, which a client may change while the server runs: Triton's
logging extension (``GET``/``POST /v2/logging``, gRPC ``LogSettings``) and the ``--log-*``
flags that set them at start-up.

Settings (Triton's names): ``log_file`` (empty: standard error; set at start-up only),
``log_info``, ``log_warning``, ``log_error`` (whether records of that level are written),
``log_verbose_level`` (0: no debug records; above 0: debug records too) and ``log_format``
(``default`` or ``ISO8601``: UTC timestamps as ``2026-12-04T03:02:51Z``).

``configure`` sets up the root logger once per process; ``apply`` changes what it lets
through and how it formats, for every logger (and every thread) at once. The engine owns
the settings of a server with front-end workers and hands each change to them.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any, Mapping

from pyserver.errors import invalid_arg

FORMATS = ("default", "ISO8601")
_BOOLEANS = ("log_info", "log_warning", "log_error")


@dataclasses.dataclass(frozen=True)
class LogSettings:
    log_file: str = ""
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_verbose_level: int = 0
    log_format: str = "default"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> "LogSettings":
        """These settings with ``changes`` made; raises INVALID_ARG (naming the setting) for
        an unknown name, a value of the wrong type or range, or a new log file."""
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name in _BOOLEANS:
                if not isinstance(value, bool):
                    raise invalid_arg(f"log setting '{name}' must be true or false")
            elif name == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise invalid_arg("log setting 'log_verbose_level' must be an integer "
                                      ">= 0")
            elif name == "log_format":
                if value not in FORMATS:
                    raise invalid_arg(f"log setting 'log_format' must be one of "
                                      f"{', '.join(FORMATS)}, got {str(value)[:100]!r}")
            elif name == "log_file":
                if value != self.log_file:
                    raise invalid_arg("log setting 'log_file' cannot be changed while the "
                                      "server runs (start it with --log-file)")
            else:
                raise invalid_arg(f"unknown log setting '{str(name)[:100]}'; known: "
                                  f"{', '.join(f.name for f in dataclasses.fields(self))}")
            clean[name] = value
        return dataclasses.replace(self, **clean)

    def allows(self, level: int) -> bool:
        """Whether a record of ``level`` is written."""
        if level >= logging.ERROR:
            return self.log_error
        if level >= logging.WARNING:
            return self.log_warning
        if level >= logging.INFO:
            return self.log_info
        return self.log_verbose_level > 0


class _SettingsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _current.allows(record.levelno)


_current = LogSettings()
_tag = ""
_handler: logging.Handler | None = None
_filter = _SettingsFilter()


def current() -> LogSettings:
    return _current


def configure(settings: LogSettings, tag: str = "") -> None:
    """Sets up the root logger of this process: one handler, on ``settings.log_file``
    (appended to) or standard error, with ``settings`` applied; ``tag`` follows the
    logger name in each line (a front-end worker's ``w0``). Call once, at start-up, before
    other threads log. Raises OSError when the log file cannot be opened."""
    global _handler, _tag
    handler: logging.Handler = logging.FileHandler(settings.log_file, encoding="utf-8") \
        if settings.log_file else logging.StreamHandler(sys.stderr)
    handler.addFilter(_filter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _handler, _tag = handler, f" {tag}" if tag else ""
    apply(settings)


def apply(settings: LogSettings) -> None:
    """Makes ``settings`` this process's: from the next record on, every logger writes
    what they allow in their format. Thread-safe (one reference swapped; a record being
    written as it happens gets the old or the new settings)."""
    global _current
    _current = settings
    logging.getLogger().setLevel(logging.DEBUG if settings.log_verbose_level > 0
                                 else logging.INFO)
    if _handler is not None:
        _handler.setFormatter(_formatter(settings.log_format))


def _formatter(log_format: str) -> logging.Formatter:
    line = f"%(asctime)s %(levelname).1s %(name)s{_tag}] %(message)s"
    if log_format == "ISO8601":
        formatter = logging.Formatter(line, datefmt="%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
        return formatter
    return logging.Formatter(line)
