"""The market alerts read the `features` records the engine really writes: the engine core with the
flow and book detectors on (the detector tests' generated sessions: OI spikes, divergences and
liquidation cascades; walls pulled), its output encoded as the live worker encodes it
(``OutputEncoder``) and decoded as the notifier reads the topic, then ``MarketAlerts``. The alerts
must be exactly the episode starts that the rules' table (the module doc) gives when written out
again here on the same records: so a renamed detector field or a changed encoding cannot silence an
alert while the hand-made records of the other tests still pass."""

from __future__ import annotations

import math

import pytest

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.engine import Engine
from stream_apps.faust_app.outputs import OutputEncoder
from tapeflow_notify.market_alerts import AlertRules, MarketAlerts

SERDE = AvroSerde(FileSchemaRegistry())
# the generated flow session's divergences go at most 6.4 bp past the extreme: below the default 10 bp
DIVERGENCE_PRICE = 0.0002


def engine_feature_records(module) -> list[dict]:
    out = module.run_engine(Engine([module.strategy(detectors=module.SECTION)]), module.ENGINE_ITEMS, 1000)
    records, _ = OutputEncoder(SERDE).encode(out, 0)
    decoded = [SERDE.decode(r.value) for r in records if r.topic == "features"]
    return sorted(decoded, key=lambda f: (f["eval_time"], f["symbol"]))


@pytest.fixture(scope="module")
def features() -> list[dict]:
    from tests.stream_apps.core import test_book_detectors, test_flow_detectors

    return engine_feature_records(test_flow_detectors) + engine_feature_records(test_book_detectors)


def value(inputs, name):
    v = inputs.get(name)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def condition(kind: str, inputs) -> bool | None:
    """The rules' table at its default thresholds (divergence: ``DIVERGENCE_PRICE``); None where the
    record cannot tell."""
    if kind == "oi_spike":
        z = value(inputs, "oi_spike_z")
        return None if z is None else abs(z) >= 3.0
    if kind == "divergence":
        sign, price = value(inputs, "cvd_divergence"), value(inputs, "cvd_divergence_price")
        if sign is None or (sign != 0 and price is None):
            return None
        return sign != 0 and price >= DIVERGENCE_PRICE
    if kind == "liquidation_cascade":
        flags = [value(inputs, f"liq_cascade_{s}") for s in ("long", "short")]
        return None if flags == [None, None] else any(f is not None and f >= 1 for f in flags)
    bid, ask = value(inputs, "wall_pulled_bid"), value(inputs, "wall_pulled_ask")
    return None if bid is None and ask is None else (bid or 0) + (ask or 0) >= 1


def test_every_alert_kind_fires_on_engine_features_exactly_at_episode_starts(features):
    alerts = MarketAlerts(AlertRules(cooldown_s=0, divergence_price=DIVERGENCE_PRICE))
    got = [(n.record["symbol"], n.record["kind"], n.record["eval_time"]) for f in features for n in alerts.notes_for(f)]
    held: dict[tuple[str, str], bool] = {}
    want = []
    for f in features:
        for kind in ("oi_spike", "divergence", "liquidation_cascade", "wall_pulled"):
            now = condition(kind, f["inputs"])
            if now is None:
                continue
            if now and not held.get((f["symbol"], kind), False):
                want.append((f["symbol"], kind, f["eval_time"]))
            held[(f["symbol"], kind)] = now
    assert got == want
    fired = {kind for _, kind, _ in got}
    assert fired == {"oi_spike", "divergence", "liquidation_cascade", "wall_pulled"}, fired
