"""The suite is hermetic: a fingerprint of system paths the tests could damage, taken before and after.

Why this exists: a test once mirrored the system PostgreSQL by symlinking its extension files and
then wrote `timescaledb.control` through the link, overwriting TimescaleDB's real control file on a
user's machine. tests/conftest.py fingerprints the watched paths when a session starts and fails
the run if anything under them changed when it ends.

A fingerprint maps every path under the watched roots (symlinks not followed) to its mode, uid/gid
and either its content hash (files), its target (symlinks) or nothing more (directories); a missing
root is recorded as missing, so creating one is a change too. Every file's content is hashed each
time (the ~50 MB of a PostgreSQL installation take a fraction of a second).
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping

#: What the tests could reach: the server's programs, libraries and extension files (the mirrors of
#: tests/tapeflow/stack copy from them), its config, and the account the embedded server runs as.
DEFAULT_WATCHED = (
    "/usr/lib/postgresql/*/bin",
    "/usr/lib/postgresql/*/lib",
    "/usr/share/postgresql/*/extension",
    "/usr/share/postgresql-common",
    "/etc/postgresql",
    "/etc/postgresql-common",
)
#: Extra roots, separated by os.pathsep (e.g. a second PostgreSQL installation, or a user's own).
EXTRA_ENV = "TAPEFLOW_TEST_GUARD_PATHS"

Entry = tuple  # (kind, mode, uid, gid, detail)


def watched_roots(patterns: Iterable[str] = DEFAULT_WATCHED) -> list[str]:
    """The watched patterns expanded; a pattern that matches nothing stays as itself (watched as missing)."""
    extra = [p for p in os.environ.get(EXTRA_ENV, "").split(os.pathsep) if p]
    roots: list[str] = []
    for pattern in [*patterns, *extra]:
        roots.extend(sorted(glob.glob(pattern)) or [pattern])
    return roots


def _hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as exc:  # unreadable: its mode and owner still count
        return f"unreadable: {exc.strerror}"
    return h.hexdigest()


def _entry(path: str, st: os.stat_result) -> Entry:
    ids = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if stat.S_ISLNK(st.st_mode):
        return ("link", *ids, os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", *ids, None)
    if stat.S_ISREG(st.st_mode):
        return ("file", *ids, (st.st_size, _hash(path)))
    return ("other", *ids, stat.S_IFMT(st.st_mode))


def fingerprint(roots: Iterable[str]) -> dict[str, Entry]:
    """path -> (kind, mode, uid, gid, content hash | link target) for every root and everything under it."""
    out: dict[str, Entry] = {}
    for root in roots:
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            out[root] = ("missing", None, None, None, None)
            continue
        out[root] = _entry(root, st)
        if not stat.S_ISDIR(st.st_mode):
            continue
        for dirpath, dirnames, filenames in os.walk(root):  # never follows symlinked directories
            for name in (*dirnames, *filenames):
                path = os.path.join(dirpath, name)
                try:
                    out[path] = _entry(path, os.lstat(path))
                except FileNotFoundError:
                    continue
    return out


def differences(before: Mapping[str, Entry], after: Mapping[str, Entry], limit: int = 20) -> list[str]:
    """One line per changed, added or removed path (at most `limit`, then a count of the rest)."""
    lines = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        if a is None:
            lines.append(f"created: {path}")
        elif b is None:
            lines.append(f"removed: {path}")
        else:
            what = [name for name, x, y in zip(("kind", "mode", "owner", "group", "content/target"), a, b) if x != y]
            lines.append(f"changed ({', '.join(what)}): {path}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines
