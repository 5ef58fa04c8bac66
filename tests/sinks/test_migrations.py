"""Migrations against a real PostgreSQL: idempotent, tamper-evident, roles and privileges in place."""

from __future__ import annotations

import psycopg
import pytest

from sinks.migrate import (
    MigrationError,
    load_migrations,
    migrate,
    pending_migrations,
    set_role_passwords,
)

pytestmark = pytest.mark.integration


def test_migrations_apply_once_and_are_idempotent(database, pg_server):
    first = migrate(database)
    expected = [m.key for m in load_migrations() if pg_server.timescaledb or not m.timescale]
    assert first.applied == expected
    assert first.timescale is pg_server.timescaledb
    assert pending_migrations(database) == []

    second = migrate(database)
    assert second.applied == [] and second.already == expected
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT key FROM schema_migrations ORDER BY key").fetchall()
    assert [r[0] for r in rows] == sorted(expected)


def test_editing_an_applied_migration_is_refused(database):
    migrate(database)
    key = load_migrations()[0].key
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE key = %s", (key,))
    with pytest.raises(MigrationError, match=f"{key} was changed after it was applied"):
        migrate(database)


def test_roles_get_the_right_privileges_on_new_tables(database):
    migrate(database)
    with psycopg.connect(database, autocommit=True) as conn:
        # a table created later by the migration owner, as the sink migrations will
        conn.execute("CREATE TABLE privilege_probe (x int)")
        conn.execute("SET ROLE tapeflow_writer")
        conn.execute("INSERT INTO privilege_probe VALUES (1)")
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE tapeflow_readonly")
        assert conn.execute("SELECT count(*) FROM privilege_probe").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO privilege_probe VALUES (2)")


def test_concurrent_runners_do_not_race(database):
    """Two sinks starting at once: the advisory lock serialises them and each file runs once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: migrate(database), range(4)))
    applied = [k for r in reports for k in r.applied]
    assert sorted(applied) == sorted(set(applied))  # nothing applied twice
    assert pending_migrations(database) == []


def test_role_passwords_for_external_servers(database, pg_server):
    migrate(database)
    set_role_passwords(database, {"tapeflow_readonly": "ro-pass-123"})
    ro = psycopg.conninfo.make_conninfo(host=pg_server.host, port=pg_server.port, user="tapeflow_readonly",
                                        password="ro-pass-123", dbname=psycopg.conninfo.conninfo_to_dict(database)["dbname"])
    with psycopg.connect(ro) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "tapeflow_readonly"
    with pytest.raises(MigrationError, match="does not exist"):
        set_role_passwords(database, {"no_such_role": "x"})
