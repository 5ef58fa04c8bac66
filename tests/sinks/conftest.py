"""Fixtures of the sink and database tests."""

from __future__ import annotations

import pytest

from sinks.migrate import migrate


@pytest.fixture
def plain_db(database, pg_server) -> str:
    """A migrated database with the plain-PostgreSQL layout (skipped on a TimescaleDB test server)."""
    if pg_server.timescale_image:
        pytest.skip("TimescaleDB server: the tables are hypertables, not partitioned tables")
    migrate(database)
    return database
