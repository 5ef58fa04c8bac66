"""One logging set-up for every tapeflow process (structlog): console lines for people, JSON for machines.

Services, the Faust worker and the fake exchange all call `configure_logging` once at start. Our own
modules log through structlog (`structlog.get_logger(name)`, key-value events); libraries that use the
standard `logging` module (Faust, mode, aiokafka, aiohttp, websockets) are routed through the same
structlog processors by a `ProcessorFormatter` on the root handler, so every line of a process has
one format. Faust, mode and aiokafka narrate every rebalance step at INFO: they are kept at WARNING
unless the level is DEBUG.
"""

from __future__ import annotations

import logging
import sys

import structlog

NOISY_LIBRARIES = ("faust", "aiokafka", "mode")


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Configure structlog and the standard library's root logger; `fmt` is `console` or `json`."""
    numeric = getattr(logging, level.upper())
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    shared = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.PositionalArgumentsFormatter(),
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    quiet_library_loggers(level)


def quiet_library_loggers(level: str) -> None:
    """Keep Faust, mode and aiokafka at WARNING unless `level` is DEBUG (also for in-process workers)."""
    if level.upper() != "DEBUG":
        for name in NOISY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
