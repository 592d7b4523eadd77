"""Logging for every stage: text lines for people, or JSON lines (one object a line) for
collectors, chosen by MBO_LOG__FORMAT; level from MBO_LOG__LEVEL."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from mbo_core.settings import LogSettings

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged too.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "stage": self.stage,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


#: Loggers whose info lines say nothing a user of ours needs: aiokafka logs every assign() of a
#: partition (the report's and a resumed producer's read-backs, each rebuild's) at info.
QUIET_LOGGERS = ("aiokafka.consumer.subscription_state",)


class RepeatedLogFilter(logging.Filter):
    """Lets the same warning or error line (same logger, level and text) through once per
    `interval_s`, saying how many copies it held back.

    Why: with the broker away, aiokafka logs every failed reconnect and fetch of every client,
    ~27 KB/s from three stages (~100 MB an hour), the same few lines over and over. Lines below
    WARNING and every distinct line pass untouched.
    """

    MAX_KEYS = 1024  # distinct lines remembered; forgotten all at once beyond (bounded memory)

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (passed at, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._seen) >= self.MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = (
                f"{record.getMessage()} (and {seen[1]} more like it in {now - seen[0]:.0f} s)"
            )
            record.args = None
        return True


def configure_logging(settings: LogSettings, stage: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatedLogFilter())
    if settings.format == "json":
        handler.setFormatter(JsonFormatter(stage))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {stage} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def logging_config(settings: LogSettings, stage: str) -> dict[str, Any]:
    """The same setup as a logging.config.dictConfig dict, for frameworks that take one
    (Faust's worker installs its own handlers otherwise)."""
    text = f"%(asctime)s %(levelname)s {stage} %(name)s: %(message)s"
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "stage": stage} if settings.format == "json" else {"format": text}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"stage": formatter},
        "filters": {"repeats": {"()": RepeatedLogFilter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "stage",
                "stream": sys.stderr,
                "filters": ["repeats"],
            }
        },
        "root": {"level": settings.level, "handlers": ["stderr"]},
        "loggers": {name: {"level": "WARNING"} for name in QUIET_LOGGERS},
    }
