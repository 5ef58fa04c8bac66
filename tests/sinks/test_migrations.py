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


def test_a_migration_recorded_before_its_comments_were_reworded_is_accepted(database):
    """Only the comments of the files in REWORDED changed: a database that recorded their earlier
    checksums migrates as before; any other checksum is still refused."""
    from sinks.migrate import REWORDED

    migrate(database)
    with psycopg.connect(database, autocommit=True) as conn:
        for key, old in REWORDED.items():
            conn.execute("UPDATE schema_migrations SET checksum = %s WHERE key = %s", (old, key))
    again = migrate(database)
    assert again.applied == [] and set(REWORDED) <= set(again.already)
    key = next(iter(REWORDED))
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
    ro = psycopg.conninfo.make_conninfo(
        host=pg_server.host,
        port=pg_server.port,
        user="tapeflow_readonly",
        password="ro-pass-123",
        dbname=psycopg.conninfo.conninfo_to_dict(database)["dbname"],
    )
    with psycopg.connect(ro) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "tapeflow_readonly"
    with pytest.raises(MigrationError, match="does not exist"):
        set_role_passwords(database, {"no_such_role": "x"})


def _schema(conninfo: str) -> dict[str, list]:
    """What a migration leaves in a database, its name left out: relations (partitions included),
    functions, constraints, indexes, triggers, privileges (the database's own too), default
    privileges, extensions, the migration history and, with TimescaleDB, the hypertables."""
    queries = {
        "database_acl": "SELECT coalesce(datacl::text[], '{}') FROM pg_database WHERE datname = current_database()",
        "relations": "SELECT c.relname, c.relkind, c.relispartition, coalesce(c.relacl::text[], '{}'), "
        "pg_get_expr(c.relpartbound, c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' ORDER BY 1",
        "functions": "SELECT p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc), p.prosecdef, "
        "coalesce(p.proacl::text[], '{}') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' ORDER BY 1, 2",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
        "default_acl": "SELECT defaclrole::regrole::text, defaclobjtype, defaclacl::text[] FROM pg_default_acl ORDER BY 1, 2",
        "schema_acl": "SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'public'",
        "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
        "history": "SELECT key, checksum, timescale FROM schema_migrations ORDER BY 1",
    }
    with psycopg.connect(conninfo, autocommit=True) as conn:
        out = {k: conn.execute(q).fetchall() for k, q in queries.items()}
        if conn.execute("SELECT to_regclass('_timescaledb_catalog.hypertable')").fetchone()[0]:
            out["hypertables"] = conn.execute(
                "SELECT table_name, num_dimensions, compression_state FROM _timescaledb_catalog.hypertable ORDER BY 1"
            ).fetchall()
    return out


@pytest.mark.parametrize("engine_extension", ["timescaledb", None], ids=["server_layout", "plain"])
def test_a_migrated_databases_copy_equals_a_fresh_migration(database, new_migrated_database, engine_extension):
    """The tests' `migrated_database` and `plain_db` are copies of a template migrated once
    (tests/support/migrated.py): each must be what migrating an empty database gives, down to the
    privileges on the database itself (which a copy does not carry over) and today's partitions."""
    copy = new_migrated_database(engine_extension=engine_extension)
    migrate(database, engine_extension=engine_extension)
    fresh, copied = _schema(database), _schema(copy)
    assert len(fresh["relations"]) > 40 and len(fresh["history"]) == len(copied["history"]) > 15
    assert any("tapeflow_writer=c/" in acl for acl in fresh["database_acl"][0][0])
    for part in fresh:
        assert copied[part] == fresh[part], part
    assert fresh.keys() == copied.keys()
