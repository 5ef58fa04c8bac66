"""The narrative's verdict and sentences, from numbers alone (deterministic)."""

from __future__ import annotations

from review.narrative import duration, sentences, verdict


def test_the_verdict_names_where_the_money_went():
    assert verdict(0.6, 0.9, 0.05, 0.0) == "the fees took the trade"  # gross +0.6R, fees 0.9R
    assert verdict(0.6, 0.1, 0.7, 0.0) == "the slippage took the trade"
    assert verdict(0.6, 0.1, 0.1, 0.5) == "the funding took the trade"
    assert verdict(1.5, 0.2, 0.05, 0.0) == "a win"
    assert verdict(1.0, 0.4, 0.2, 0.0) == "a win, but costs took 60 % of the gross"
    assert verdict(-1.0, 0.1, 0.2, 0.0) == "the market took the trade: the price went against it; costs added 0.30R"
    assert verdict(-1.0, 0.0, 0.0, -0.1) == "the market took the trade: the price went against it"


def test_sentences_are_built_from_the_autopsy_in_a_fixed_order():
    a = {
        "trade": {
            "direction": "LONG",
            "symbol": "BTCUSDT",
            "strategy": "v53",
            "tier": "heavy",
            "score": 81.4,
            "exit_reason": "sl_be",
            "entry_time": 0,
            "exit_time": 47 * 60_000,
        },
        "costs": {"gross_r": 0.6, "fees_r": 0.9, "slippage_r": 0.0, "funding_r": 0.0, "net_r": -0.3},
        "layers": {"flow": 30.0, "cvd": 22.0, "oi": 0.0},
        "gate": None,
        "tca": {"entry_slip_bps": 1.25, "exit_slip_bps": None, "maker_share": 0.5},
        "peers": {"count": 0},
        "counterfactuals": {"best": {"knob": "sl", "scale": 1.5, "net_r": 0.4, "delta_net_r": 0.7}},
    }
    assert sentences(a) == [
        "LONG BTCUSDT (v53, heavy tier, score 81); flow (30) and cvd (22) scored most;"
        " closed by its break-even stop after TP1 after 47 min.",
        "Gross +0.60R, fees 0.90R, slippage 0.00R, funding +0.00R: net -0.30R, the fees took the trade.",
        "The entry filled +1.2 bp from the mid at send; 50 % of the quantity was maker.",
        "Best alternative: stop x1.5 would have made +0.40R (+0.70R against the replay as traded).",
    ]
    assert sentences(a) == sentences(dict(a))  # no clock, no randomness
    assert [duration(x) for x in (30_000, 90 * 60_000, 5 * 3_600_000)] == ["30 s", "90 min", "5.0 h"]
