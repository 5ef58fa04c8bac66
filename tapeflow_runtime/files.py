"""Files written so a crash never leaves half of one: write a temporary sibling, then rename over.

`os.replace` is atomic on POSIX within one filesystem, so a reader sees the old content or the new,
never a torn file (state files, checkpoints, the schema registry, downloads). Secrets are created
once with mode 0600 and `O_EXCL`, so two processes racing to create one cannot both win.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes, *, tmp_suffix: str = ".tmp") -> None:
    """`path` replaced by `data` whole, or (on any error, e.g. a full disk) left as it was, with no
    temporary file left behind to hold the space."""
    tmp = path.with_name(path.name + tmp_suffix)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, tmp_suffix: str = ".tmp") -> None:
    atomic_write_bytes(path, text.encode(), tmp_suffix=tmp_suffix)


def read_or_create_secret(path: Path) -> str:
    """The secret stored at `path`, generated (URL-safe, 24 random bytes) and saved 0600 on first use."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value
