"""The shipped regime strategies (``stream_apps/strategies/regimes``): each regime's rules on hand-built
rows (fires, does not fire, missing input), and that none of them joins the default strategy set."""

from __future__ import annotations

import pytest

from stream_apps.core.scoring import LONG, SHORT, score
from stream_apps.core.strategy import default_strategy_dir, load_strategies
from tests.support.scoring import FAST, MID, feats

REGIMES = {c.regime.name: c for c in load_strategies(default_strategy_dir() / "regimes")}


def test_every_seed_regime_public_data_supports_ships_and_none_runs_by_default():
    assert sorted(REGIMES) == [
        "accumulation",
        "distribution",
        "fake_breakout",
        "liquidation_cascade",
        "real_breakout",
        "stop_hunt",
        "whale_dump",
        "whale_pump",
    ]
    assert all(c.name == f"regime_{name}" for name, c in REGIMES.items())
    assert len({c.detectors.model_dump_json() for c in REGIMES.values()}) == 1  # one engine can run them all
    assert [c.name for c in load_strategies(default_strategy_dir())] == ["v51_baseline", "v52_8signals", "v53"]


def row(direction: str, **overrides):
    """A snapshot with every detector output present and neutral, then ``overrides``."""
    neutral = dict(
        vpin=0.3,
        kyle_lambda=0.1,
        amihud=1e-4,
        cvd_divergence=0.0,
        cvd_divergence_price=0.0,
        cvd_divergence_cvd=0.0,
        oi_change_5m=0.0,
        oi_spike_z=0.0,
        liq_long_count=0.0,
        liq_short_count=0.0,
        liq_long_usd=0.0,
        liq_short_usd=0.0,
        liq_cascade_long=0.0,
        liq_cascade_short=0.0,
        iceberg_refills_bid=0.0,
        iceberg_refills_ask=0.0,
        atr_percentile=40.0,
    )
    neutral.update(overrides)
    return feats(direction, **neutral)


def s(direction: str) -> float:
    return 1.0 if direction == LONG else -1.0


# each case: regime, a row where it fires (expected direction and tier), a change that breaks one rule,
# and an input that, when missing, stops it
def whale(direction):
    return row(
        direction,
        whale_ratio_15m=0.6 * s(direction),
        vwap_30m=30_000.0 - 60 * s(direction),
        vpin=0.7,
        oi_change_5m=0.001,
    )


def quiet(direction, **more):
    return row(direction, vwap_30m=30_000.0 - 20 * s(direction), obi=0.2 * s(direction), **more)


def stop_hunt(direction):  # a sweep 0.1 % beyond the reference extreme, the other side flushed
    flushed = {"liq_long_usd": 200_000.0} if direction == LONG else {"liq_short_usd": 200_000.0}
    return row(direction, cvd_divergence=s(direction), cvd_divergence_price=0.001, **flushed)


def cascade(direction):
    side = {"liq_cascade_short": 1.0} if direction == LONG else {"liq_cascade_long": 1.0}
    return row(direction, vwap_30m=30_000.0 - 30 * s(direction), oi_spike_z=-2.0, **side)


def breakout(direction, whale=0.3):  # whale flow 0.3 in the break's direction makes it heavy
    return row(
        direction,
        vwap_30m=30_000.0 - 120 * s(direction),
        vpin=0.6,
        oi_change_5m=0.002,
        whale_ratio_15m=whale * s(direction),
    )


def fake(direction):  # price broke the other way by 0.4 %, flow already back in the signal's direction
    return row(direction, vwap_30m=30_000.0 + 120 * s(direction), oi_change_5m=-0.001, cvd_divergence=s(direction))


CASES = [
    ("whale_pump", whale(LONG), LONG, "heavy", {"whale_ratio_15m": 0.2}, "vpin"),
    ("whale_dump", whale(SHORT), SHORT, "heavy", {"cvd": ((FAST, 100.0), (MID, -400.0))}, "vpin"),
    ("whale_pump", whale(SHORT), None, None, {}, "vpin"),  # the pump is LONG only
    ("accumulation", quiet(LONG, iceberg_refills_bid=4.0), LONG, "heavy", {"atr_percentile": 80.0}, "obi"),
    ("accumulation", quiet(LONG), LONG, "standard", {"vwap_30m": 29_900.0}, "vwap_30m"),
    ("distribution", quiet(SHORT, iceberg_refills_ask=3.0), SHORT, "heavy", {"obi": 0.0}, "iceberg_refills_ask"),
    ("stop_hunt", stop_hunt(LONG), LONG, "standard", {"cvd_divergence_price": 0.0002}, "liq_long_usd"),
    ("stop_hunt", stop_hunt(SHORT), SHORT, "standard", {"liq_short_usd": 0.0}, "cvd_divergence"),
    ("liquidation_cascade", cascade(LONG), LONG, "heavy", {"vwap_30m": 30_010.0}, "liq_cascade_long"),
    ("liquidation_cascade", cascade(SHORT), SHORT, "heavy", {"cvd_slope": ((FAST, 1.0),)}, "vwap_30m"),
    ("real_breakout", breakout(LONG, whale=0.1), LONG, "standard", {"oi_change_5m": -0.001}, "vpin"),
    ("real_breakout", breakout(SHORT), SHORT, "heavy", {"cvd_divergence": 1.0}, "oi_change_5m"),
    ("fake_breakout", fake(LONG), LONG, "heavy", {"oi_change_5m": 0.002}, "oi_change_5m"),
    ("fake_breakout", fake(SHORT), SHORT, "heavy", {"vwap_30m": 30_000.0}, "vwap_30m"),
]


@pytest.mark.parametrize(
    "regime, snapshot, direction, tier, breaks, needed",
    CASES,
    ids=[f"{c[0]}-{c[1].cvd[0][1] > 0 and 'up' or 'down'}" for c in CASES],
)
def test_regime_rules_on_hand_built_rows(regime, snapshot, direction, tier, breaks, needed):
    cfg = REGIMES[regime]
    e = score(snapshot, cfg)
    assert (e.direction, e.tier) == (direction, tier), e.notes
    if direction is None:
        return
    assert e.score == (85.0 if tier == "heavy" else 75.0) and e.block_reason is None
    broken = score(snapshot.__class__(**{**_fields(snapshot), **breaks}), cfg)
    assert broken.tier is None and broken.block_reason in ("rules_not_met", "no_direction"), broken.notes
    assert any(n.startswith(f"regime:{regime}:") for n in broken.notes), broken.notes
    missing = score(snapshot.__class__(**{**_fields(snapshot), needed: None}), cfg)
    heavy_only = needed in {c.feature for c in cfg.regime.heavy}
    if heavy_only:  # a missing heavy input leaves the standard signal
        assert (missing.tier, missing.block_reason) == ("standard", None)
    else:
        assert (missing.tier, missing.block_reason) == (None, "missing_input")
    assert any(n.startswith("missing:") for n in missing.notes), missing.notes


def _fields(snapshot) -> dict:
    return {name: getattr(snapshot, name) for name in snapshot.__dataclass_fields__}
