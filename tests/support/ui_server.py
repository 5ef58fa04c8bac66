"""The web UI served for a browser test: a login in the read-only role and the app on a free port.

What the UI's page tests share: `tapeflow ui` reads the database as `tapeflow_readonly`, so each test
logs in with a role of its own in that group, and serves `tapeflow_ui.app.create_app` with uvicorn in a
thread on 127.0.0.1 (port 0: the kernel picks a free one), stopped when the test is done."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql


def readonly_login(owner: str, role: str, password: str) -> str:
    """A login `role` in `tapeflow_readonly`, created through `owner`; its conninfo on the same database."""
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE tapeflow_readonly").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    return psycopg.conninfo.make_conninfo(owner, user=role, password=password)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` served on a free loopback port for the block; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
