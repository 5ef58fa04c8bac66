"""Where the executor service finds the routing table of a signal's strategy revision
(``Router.resolver``): the strategy files the stack runs (``TAPEFLOW_STRATEGIES``, read once), then the
registered revisions (the database's ``strategy_revisions``, by ``config_hash``: a canary or a promoted
revision the files do not have). A found table is kept by the router; a strategy without a ``routing:``
section, or one that cannot be looked up, gets the executor config's table (and is asked again at its
next signal: signals are rare, and a database that was down may be back).

Only the ``routing:`` section of a revision's stored content is read (not the whole strategy, whose
confidence model file may live elsewhere): it is validated as the strategy file validated it.
"""

from __future__ import annotations

from typing import Any

import structlog
import yaml
from pydantic import ValidationError

from stream_apps.core.routing_table import RoutingTable
from stream_apps.core.strategy import StrategyConfigError, load_strategy
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.settings import Settings

log = structlog.get_logger("executor")


def routing_of(content: str) -> RoutingTable | None:
    """The ``routing:`` section of a strategy file's text (YAML or JSON), None when it has none."""
    data: Any = yaml.safe_load(content)
    section = data.get("routing") if isinstance(data, dict) else None
    return None if section is None else RoutingTable.model_validate(section)


class RevisionTables:
    """``Router.resolver`` of the service: the strategy files' tables, else the registered revision's."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.files: dict[str, RoutingTable | None] = {}
        for ref in settings.strategies:
            try:
                cfg = load_strategy(ref)
            except StrategyConfigError as exc:  # the engine refuses it too; nothing of it will trade
                log.warning("strategy file not read for its routing table", strategy=ref, error=str(exc))
                continue
            self.files[cfg.config_hash] = cfg.routing
        self._conninfo: str | None = None

    def __call__(self, config_hash: str) -> RoutingTable | None:
        if config_hash in self.files:
            return self.files[config_hash]
        import psycopg

        try:
            with psycopg.connect(self._database(), connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT content FROM strategy_revisions WHERE config_hash = %s LIMIT 1", (config_hash,)
                ).fetchone()
            return None if row is None else routing_of(row[0])
        except (psycopg.Error, TapeflowError, yaml.YAMLError, ValidationError) as exc:
            log.warning("routing table of a revision not found", config_hash=config_hash, error=str(exc))
            return None

    def _database(self) -> str:
        if self._conninfo is None:
            from tapeflow_runtime.endpoints import resolve_database
            from tapeflow_runtime.paths import StackPaths

            endpoints = resolve_database(self.settings, StackPaths(self.settings.home))
            self._conninfo = endpoints.readonly or endpoints.owner
        return self._conninfo
