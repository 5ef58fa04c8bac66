"""The `tapeflow` commands, one module per group; importing a module registers its commands on the app
(`tapeflow.commands._common.app`). `tapeflow.cli` imports them in the order of ``GROUPS``, which is
the order `--help` lists them: an import sorter must not decide that."""

from __future__ import annotations

import importlib

GROUPS = (
    "stack",
    "market_data",
    "history",
    "strategy",
    "rollout",
    "labels",
    "autopsy",
    "execution",
    "services",
    "topics",
    "storage",
)


def register_all() -> None:
    for name in GROUPS:
        importlib.import_module(f"{__name__}.{name}")
