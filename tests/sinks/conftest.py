"""Fixtures of the sink and database tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def plain_db(new_migrated_database) -> str:
    """A database migrated with the plain-PostgreSQL layout (time partitions) on any server.

    Where the session's server has TimescaleDB this is the layout of a database migrated before
    TimescaleDB was installed; the TimescaleDB layout is tested by the tests that migrate with the
    server's default (`pg_server.timescaledb` says which one they get).
    """
    return new_migrated_database(engine_extension=None)
