"""The liveness settings reach both ends: libpq's socket options on the client, the session's TCP
settings on the server's backend (as a non-superuser, as the sink's writer role connects). The partition
they are for is exercised end to end in tests/faults/test_broker_and_links.py."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tapeflow_runtime.db_liveness import liveness_kwargs

pytestmark = pytest.mark.integration


def _server_settings(conninfo: str, **kwargs) -> dict[str, str]:
    names = (
        "tcp_user_timeout",
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
        "application_name",
    )
    with psycopg.connect(conninfo, autocommit=True, **kwargs) as conn:
        return {n: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0] for n in names}


def test_an_unprivileged_session_gets_the_server_side_timeouts_and_keeps_its_own_options(database):
    role = "liveness_probe_role"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'probe-pw'").format(sql.Identifier(role)))
    try:
        params = psycopg.conninfo.conninfo_to_dict(database)
        params.update(user=role, password="probe-pw", options="-c application_name=mine")
        conninfo = psycopg.conninfo.make_conninfo(**params)
        kwargs = liveness_kwargs(conninfo, timeout_s=12)
        got = _server_settings(conninfo, **kwargs)
        assert got["tcp_user_timeout"] == "12000"  # ms (its show hook prints the number)
        assert (got["tcp_keepalives_idle"], got["tcp_keepalives_interval"], got["tcp_keepalives_count"]) == (
            "6",
            "2",
            "3",
        )
        assert got["application_name"] == "mine"  # the caller's own options survive
        # the client side: libpq's own parameters, as the connection reports them
        with psycopg.connect(conninfo, **kwargs) as conn:
            info = {
                k: v
                for k, v in psycopg.conninfo.conninfo_to_dict(conn.info.dsn).items()
                if k.startswith(("keepalives", "tcp_user"))
            }
        assert info == {
            "keepalives": "1",
            "keepalives_idle": "6",
            "keepalives_interval": "2",
            "keepalives_count": "3",
            "tcp_user_timeout": "12000",
        }
        # without them, the defaults that wait out a partition for minutes
        assert _server_settings(conninfo)["tcp_user_timeout"] == "0"
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
