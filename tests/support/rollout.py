"""Realistic config.rollouts and config.applied records, and strategy files for rollout tests."""

from __future__ import annotations

from pathlib import Path

from stream_apps.core.strategy import default_strategy_dir

V53_TEXT = (default_strategy_dir() / "v53.yaml").read_text(encoding="utf-8")

ROLLOUT_CANARY = {
    "strategy": "v53",
    "seq": 2,
    "active": {"rev": 1, "config_hash": "a" * 64, "content": "name: v53\n"},
    "canary": {
        "rev": 2,
        "config_hash": "b" * 64,
        "content": "name: v53\ncooldown: 15m\n",
        "symbols": ["BTCUSDT"],
        "size_pct": None,  # a canary by symbols
    },
    "action": "canary",
    "actor": "ops",
    "reason": "longer cooldown",
    "requested_time": 1718000000000,
    "guardrails": {
        "max_drawdown_r": 3.0,
        "min_net_r": -3.0,
        "window_trades": 20,
        "min_win_rate": 0.25,
        "min_trades": 10,
    },
}

CONFIG_APPLIED = {
    "strategy": "v53",
    "seq": 2,
    "active_rev": 1,
    "canary_rev": 2,
    "canary_symbols": ["BTCUSDT"],
    "partition": 0,
    "applied_from": 1718000010000,
    "market": "binance:BTCUSDT",
}


def v53_variant(directory: Path, stem: str, old: str, new: str) -> Path:
    """The shipped v53 file with the one line ``old`` replaced by ``new``, written to ``directory``."""
    assert V53_TEXT.count(old) == 1, old
    path = directory / f"{stem}.yaml"
    path.write_text(V53_TEXT.replace(old, new), encoding="utf-8")
    return path
