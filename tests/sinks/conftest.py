"""Fixtures of the sink and database tests."""

from __future__ import annotations

import pytest

from sinks.migrate import migrate


@pytest.fixture
def plain_db(database) -> str:
    """A database migrated with the plain-PostgreSQL layout (time partitions) on any server.

    Where the session's server has TimescaleDB this is the layout of a database migrated before
    TimescaleDB was installed; the TimescaleDB layout is tested by the tests that migrate with the
    server's default (`pg_server.timescaledb` says which one they get).
    """
    migrate(database, engine_extension=None)
    return database
