"""The guard of tests/conftest.py (tests/support/guard.py) sees every kind of write to a watched tree.

It is what fails a run that touched the system's PostgreSQL installation; here it watches a temp
tree shaped like one and each kind of damage a test could do is done to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import guard


@pytest.fixture
def tree(tmp_path) -> Path:
    ext = tmp_path / "share" / "extension"
    ext.mkdir(parents=True)
    (ext / "timescaledb.control").write_text("default_version = '2.28.3'\n")
    (ext / "pg_cron.control").write_text("default_version = '1.6'\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "timescaledb.so").write_bytes(b"\x7fELF" + bytes(4096))
    (tmp_path / "lib" / "current.so").symlink_to("timescaledb.so")
    return tmp_path


def _damage(tree: Path, how: str) -> None:
    control = tree / "share" / "extension" / "timescaledb.control"
    if how == "write through a link":  # what _mirror_postgres once did to a user's machine
        link = tree / "mirror.control"
        link.symlink_to(control)
        link.write_text("default_version = '0.0'\n")
        link.unlink()
    elif how == "same size, other bytes":
        control.write_text(control.read_text().replace("2.28.3", "2.28.4"))
    elif how == "chmod":
        control.chmod(0o600)
    elif how == "chmod a directory":
        (tree / "lib").chmod(0o700)
    elif how == "retarget a link":
        (tree / "lib" / "current.so").unlink()
        (tree / "lib" / "current.so").symlink_to("pg_cron.so")
    elif how == "create":
        (tree / "lib" / "new.so").write_bytes(b"")
    elif how == "delete":
        (tree / "share" / "extension" / "pg_cron.control").unlink()


@pytest.mark.parametrize(
    "how",
    [
        "write through a link",
        "same size, other bytes",
        "chmod",
        "chmod a directory",
        "retarget a link",
        "create",
        "delete",
    ],
)
def test_every_kind_of_write_changes_the_fingerprint(tree, how):
    roots = [str(tree / "share" / "extension"), str(tree / "lib")]
    before = guard.fingerprint(roots)
    assert guard.differences(before, guard.fingerprint(roots)) == []  # reading is not a change
    _damage(tree, how)
    changed = guard.differences(before, guard.fingerprint(roots))
    assert len(changed) == 1, changed
    kind = {"create": "created", "delete": "removed"}.get(how, "changed")
    assert changed[0].startswith(kind)


def test_a_missing_root_that_appears_is_a_change(tmp_path):
    root = str(tmp_path / "etc" / "postgresql")
    before = guard.fingerprint([root])
    os.makedirs(root)
    assert guard.differences(before, guard.fingerprint([root])) == [f"changed (kind, mode, owner, group): {root}"]


def test_the_watched_roots_cover_postgresql_and_take_extra_paths(tmp_path, monkeypatch):
    monkeypatch.setenv(guard.EXTRA_ENV, f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b*'}")
    (tmp_path / "b1").mkdir()
    roots = guard.watched_roots()
    assert str(tmp_path / "a") in roots and str(tmp_path / "b1") in roots
    for pattern in ("/usr/lib/postgresql/*/lib", "/usr/share/postgresql/*/extension"):
        assert pattern in guard.DEFAULT_WATCHED
    if Path("/usr/share/postgresql/15/extension").is_dir():
        assert "/usr/share/postgresql/15/extension" in roots
