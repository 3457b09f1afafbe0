"""structlog configuration shared by every process.

Log lines are key-value events; callers log ids, tokens, counts and reasons, never a value that
could identify a person (ID number, phone, name, address). Lines go to stderr and, when a data
directory is given, to ``$HEALTHCODE_HOME/logs/<process>.log``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog


def configure(process: str, *, level: str = "INFO", home: Path | None = None) -> None:
    """Configure stdlib logging and structlog for ``process`` (``server``, ``vault``, ``up``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if home is not None:
        log_dir = home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_dir / f"{process}.log", encoding="utf-8"))
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.KeyValueRenderer(
            key_order=["timestamp", "level", "logger", "event"], drop_missing=True
        ),
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_healthcode", False):  # ours from an earlier call; keep others'
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._healthcode = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    structlog.configure(
        processors=[
            # First: a line below the logger's level is dropped before any other work.
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
