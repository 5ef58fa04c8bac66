"""One-shot setup steps run after the services are healthy: database migrations and topic creation.

Both are idempotent, so they run on every `up` (and again after the service they depend on restarts).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import psycopg

from schemas.catalogue import all_topics
from sinks.migrate import (
    MigrationError,
    migrate,
    pending_migrations,
    set_role_passwords,
    storage_engine,
)
from sinks.retention import apply_compression, resolve_policies
from tapeflow.stack.process import StackError
from tapeflow_runtime.endpoints import embedded_endpoints
from tapeflow_runtime.health import Health
from tapeflow_runtime.kafka_client import admin_client, ensure_topics
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings


class SetupStep(ABC):
    name: str
    depends_on: tuple[str, ...]

    def __init__(self, settings: Settings, paths: StackPaths) -> None:
        self.settings, self.paths = settings, paths

    @abstractmethod
    def run(self, addresses: dict[str, str], say: Callable[[str], None]) -> str:
        """Do the work; return a one-line summary."""

    @abstractmethod
    def health(self, addresses: dict[str, str]) -> Health:
        """Is the result of the step in place?"""


def apply_configured_compression(settings: Settings, owner_conninfo: str) -> dict[str, str]:
    """TimescaleDB: the compression jobs follow the `retention:` settings (needs the owner's rights)."""
    with psycopg.connect(owner_conninfo, autocommit=True, connect_timeout=5) as conn:
        return apply_compression(conn, resolve_policies(settings.retention))


def provision_external_roles(settings: Settings) -> list[str]:
    """On an external database, give the roles the passwords from TAPEFLOW_{WRITER,READONLY}_PASSWORD."""
    if settings.database_url is None:
        return []  # the embedded stack provisions its own roles with generated passwords
    wanted = {
        role: secret.get_secret_value()
        for role, secret in (
            ("tapeflow_writer", settings.writer_password),
            ("tapeflow_readonly", settings.readonly_password),
        )
        if secret is not None
    }
    return set_role_passwords(settings.database_url.get_secret_value(), wanted) if wanted else []


class MigrationsStep(SetupStep):
    name = "migrations"
    depends_on = ("database",)

    def owner_conninfo(self, addresses: dict[str, str]) -> str:
        if self.settings.database_url is not None:
            return self.settings.database_url.get_secret_value()
        return embedded_endpoints(self.settings, self.paths, addresses["database"]).owner

    def run(self, addresses, say) -> str:
        try:
            report = migrate(self.owner_conninfo(addresses), log=lambda m: None)
        except (MigrationError, psycopg.Error) as exc:
            raise StackError(f"migrations: {exc}") from None
        if report.notice:
            say(f"migrations notice: {report.notice}")
        try:
            compression = apply_configured_compression(self.settings, self.owner_conninfo(addresses))
        except psycopg.Error as exc:
            raise StackError(f"migrations: applying the compression settings: {exc}") from None
        roles = provision_external_roles(self.settings)
        flavour = report.engine
        if roles:
            flavour += f"; LOGIN set for {', '.join(roles)}"
        skipped = f", {len(report.skipped_timescale)} TimescaleDB-only skipped" if report.skipped_timescale else ""
        if compression:
            flavour += f"; compression policy changed for {', '.join(compression)}"
        return f"{len(report.applied)} applied, {len(report.already)} already applied{skipped} ({flavour})"

    def health(self, addresses) -> Health:
        try:
            pending = pending_migrations(self.owner_conninfo(addresses))
            engine = storage_engine(self.owner_conninfo(addresses))
        except psycopg.Error as exc:
            return Health(False, str(exc).strip().splitlines()[0])
        if pending:
            return Health(False, f"{len(pending)} pending: {', '.join(pending)} (run `tapeflow db migrate`)")
        return Health(True, f"all migrations applied; storage: {engine}")


class TopicsStep(SetupStep):
    name = "topics"
    depends_on = ("broker",)

    def run(self, addresses, say) -> str:
        results = ensure_topics(
            addresses["broker"], prefix=self.settings.topic_prefix, md_retention_ms=self.settings.topic_retention_ms()
        )
        created = sum(r.action == "created" for r in results)
        for r in results:
            if r.action == "mismatch":
                say(f"topics     warning: {r.name}: {r.detail}")
        return f"{created} created, {len(results) - created} already present"

    def health(self, addresses) -> Health:
        try:
            existing = admin_client(addresses["broker"]).list_topics(timeout=3).topics
        except Exception as exc:  # confluent raises KafkaException; any failure means unhealthy
            return Health(False, str(exc))
        prefix = self.settings.topic_prefix
        missing = [prefix + t.name for t in all_topics() if prefix + t.name not in existing]
        if missing:
            return Health(False, f"{len(missing)} missing: {', '.join(missing[:5])} (run `tapeflow topics create`)")
        return Health(True, f"{len(all_topics())} catalogue topics present")
