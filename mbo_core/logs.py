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


def configure_logging(settings: LogSettings, stage: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter(stage))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {stage} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)


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
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "stage", "stream": sys.stderr}
        },
        "root": {"level": settings.level, "handlers": ["stderr"]},
    }
