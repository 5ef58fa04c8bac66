"""Where the broker and the database are, wherever they run, and the three database roles.

- owner: runs migrations (embedded: the superuser; external: `TAPEFLOW_DATABASE_URL`),
- writer: what sinks use (embedded: `tapeflow_writer`; external: `TAPEFLOW_DATABASE_URL`),
- readonly: what Grafana and reports use (embedded: `tapeflow_readonly`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tapeflow_runtime.errors import EndpointError
from tapeflow_runtime.files import read_or_create_secret
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.process_records import ProcessRecord
from tapeflow_runtime.settings import Settings

SUPERUSER = "postgres"
WRITER_ROLE = "tapeflow_writer"
READONLY_ROLE = "tapeflow_readonly"


@dataclass(frozen=True)
class DatabaseEndpoints:
    owner: str
    writer: str
    readonly: str | None
    embedded: bool


def resolve_database(settings: Settings, paths: StackPaths) -> DatabaseEndpoints:
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        return DatabaseEndpoints(owner=url, writer=url, readonly=None, embedded=False)
    rec = ProcessRecord.load(paths.state_file("database"))
    if rec is None or not rec.is_alive():
        raise EndpointError(
            f"no database: the embedded stack in {paths.home} is not running (start it with `tapeflow up`) "
            "and TAPEFLOW_DATABASE_URL is unset"
        )
    return embedded_endpoints(settings, paths, rec.address)


def embedded_endpoints(settings: Settings, paths: StackPaths, address: str) -> DatabaseEndpoints:
    from psycopg.conninfo import make_conninfo  # here, not at the top: a service that only resolves the broker
    #                                              (producer, engine, executor) need not import psycopg

    host, port = address.rsplit(":", 1)

    def conninfo(user: str) -> str:
        password = read_or_create_secret(paths.secrets_dir / f"postgres-{user}")
        return make_conninfo(host=host, port=port, user=user, password=password, dbname=settings.database_name)

    return DatabaseEndpoints(
        owner=conninfo(SUPERUSER), writer=conninfo(WRITER_ROLE), readonly=conninfo(READONLY_ROLE), embedded=True
    )


def resolve_broker(settings: Settings, paths: StackPaths) -> str:
    if settings.broker:
        return settings.broker
    rec = ProcessRecord.load(paths.state_file("broker"))
    if rec is None or not rec.is_alive():
        raise EndpointError(
            f"no broker: the embedded stack in {paths.home} is not running (start it with `tapeflow up`) "
            "and TAPEFLOW_BROKER is unset"
        )
    return rec.address
