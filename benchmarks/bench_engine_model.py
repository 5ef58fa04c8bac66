"""Engine evaluation cost with a confidence model vs without (issue target: <= 1.05x), same run, same inputs.

Two engines over the same synthetic trades of 4 symbols (``bench_engine_core``'s streams, evaluation every
closed second with trades and every 15 s), each with one strategy: ``fast`` (5m/30m CVD, 10-minute
warm-up, direction layer, entry 40: a direction is a candidate, so most evaluations with a direction reach
the model) and the same strategy with a model file (``model:``). The model is what ``tapeflow model
train`` fits by default (LightGBM, ``backtest.research.model.LIGHTGBM_PARAMS``, 100 rounds of 31 leaves,
isotonic calibration) over every feature the engine gives this strategy (the decision's numbers, every
input, ``direction_sign``), fitted on the engine's own rows of six hours of such trades with a planted
label, so its p spreads over the size map's bands as a trained model's does (some signals skipped, the
rest sized). The two engines run in lockstep over the same input, each ``process`` call timed alone and
their order alternating, so a busy machine slows both alike; the best of the repeats counts.

Printed: evaluations, the evaluations the model decided (a signal or model_skip: p_win kept), seconds
of ``Engine.process`` per run, cost per evaluation, and the ratio with / without against the 1.05x
target.

Two input sizes per ``process`` call: one second (the live worker's) and one minute (a replay's).

Run: ``.venv/bin/python -m benchmarks.bench_engine_model [--quick]``. The clock is read only here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_engine_core import START, _streams
from stream_apps.core.confidence import FORMAT, PLAN_SIZE_MAP
from stream_apps.core.engine import Engine
from stream_apps.core.strategy import StrategyConfig, parse_strategy

TARGET = 1.05
FAST = {
    "name": "fast",
    "version": "1",
    "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
    "warmup": "10m",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
    "cooldown": "2m",
    "exits": {"sl_atr_mult": 1.5, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 60},
}


def engine_features(cfg: StrategyConfig) -> list[str]:
    """Every feature name the engine gives ``cfg`` (what a model fitted on its export may read)."""
    from stream_apps.core.features import SCALAR_FIELDS
    from stream_apps.core.frame import duration_name

    names = ["score", "raw_score", "layer_direction"]
    names += [
        f"in_{n}" for n in SCALAR_FIELDS if not n.endswith("_ms") and cfg._model_feature_problem(f"in_{n}") is None
    ]
    names += [f"in_cvd_{duration_name(w)}" for w in (300_000, 900_000, 1_800_000, 3_600_000, 14_400_000)]
    names += ["in_cvd_slope_5m", "in_cvd_accel_5m", "in_atr_price_ratio", "in_cvd_fast", "in_cvd_mid"]
    names += ["in_cvd_fast_slope", "in_cvd_fast_accel", "in_large_net_qty_15m", "direction_sign"]
    return names


def training_rows(cfg: StrategyConfig, features: list[str], slices: list) -> tuple[np.ndarray, np.ndarray]:
    """The engine's own feature rows at the evaluations that would reach a model (a signal or a cooldown),
    with a label that leans on the CVD acceleration in the signal's direction: a model fitted on them splits
    where the engine's values are, so its p spreads over the size map's bands as a trained one does."""
    from stream_apps.core.confidence_inputs import feature_matrix
    from stream_apps.core.scoring import COOLDOWN

    engine = Engine([cfg])
    parts = []
    for batch, now in slices:
        for table in engine.process(batch, now_ms=now).tables:
            for block in table.blocks:
                rows = np.flatnonzero((block.block == 0) | (block.block == COOLDOWN))
                if len(rows):
                    parts.append(feature_matrix(tuple(features), block.frame, block.scores, cfg, rows))
    x = np.concatenate(parts)
    lean = np.nan_to_num(x[:, features.index("in_cvd_fast_accel")] * x[:, features.index("direction_sign")])
    rank = np.argsort(np.argsort(lean)) / max(len(lean) - 1, 1)
    y = (np.random.default_rng(1).random(len(x)) < 0.25 + 0.5 * rank).astype(np.int8)
    return x, y


def model_file(features: list[str], x: np.ndarray, y: np.ndarray, folder: Path) -> tuple[Path, str]:
    """A LightGBM model file over ``features`` with the training's default parameters and isotonic map."""
    import lightgbm as lgb
    from sklearn.isotonic import IsotonicRegression

    from backtest.research.model import LIGHTGBM_PARAMS, LIGHTGBM_ROUNDS

    params = {**LIGHTGBM_PARAMS, "seed": 0, "min_data_in_leaf": 20}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=LIGHTGBM_ROUNDS)
    p = 1 / (1 + np.exp(-booster.predict(x, raw_score=True)))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    calibration = {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    doc = {
        "format": FORMAT,
        "features": features,
        "chosen": "lightgbm",
        "models": {"lightgbm": {"model": booster.model_to_string(), "calibration": calibration}},
        "size_map": [{"above": b, "multiplier": m} for b, m in PLAN_SIZE_MAP],
    }
    path = folder / "bench-model.json"
    path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")), encoding="utf-8")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def run(engines: dict[str, Engine], slices: list) -> dict[str, tuple[float, int, int, int]]:
    """Drive every engine over the same ``slices`` in lockstep (each call timed alone, their order
    alternating), so a busy machine slows them alike: per engine the seconds in ``Engine.process``,
    evaluations, evaluations with p_win, signals."""
    totals = {name: [0.0, 0, 0, 0] for name in engines}
    names = list(engines)
    for k, (batch, now) in enumerate(slices):
        for name in names if k % 2 == 0 else names[::-1]:
            began = time.perf_counter()
            out = engines[name].process(batch, now_ms=now)
            total = totals[name]
            total[0] += time.perf_counter() - began
            total[1] += out.evaluations
            total[3] += len(out.signals)
            for table in out.tables:
                total[2] += sum(int(np.count_nonzero(~np.isnan(b.p_win))) for b in table.blocks if b.p_win is not None)
    return {name: (t[0], int(t[1]), int(t[2]), int(t[3])) for name, t in totals.items()}


def slices_of(streams: list, duration: int, batch_ms: int) -> list:
    out = []
    for begin in range(START, START + duration, batch_ms):
        batch = []
        for stream in streams:
            lo, hi = (int(stream.time_ms.searchsorted(t)) for t in (begin, begin + batch_ms))
            if hi > lo:
                batch.append(stream.take(slice(lo, hi)))
        out.append((batch, begin + batch_ms))
    return out


def compare(plain: StrategyConfig, modelled: StrategyConfig, slices: list, repeats: int) -> float:
    """Best of ``repeats`` lockstep runs; prints both and returns the ratio with / without."""
    run({"with": Engine([modelled])}, slices[:120])  # compile and warm every path once
    best: dict[str, tuple[float, int, int, int]] = {}
    for _ in range(repeats):
        for name, result in run({"without": Engine([plain]), "with": Engine([modelled])}, slices).items():
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    for name in ("without", "with"):
        elapsed, evaluations, asked, signals = best[name]
        print(
            f"    {name:>7} model: {elapsed:6.2f} s, {evaluations:,} evaluations ({asked:,} decided by the model), "
            f"{signals} signals, {elapsed / evaluations * 1e6:7.2f} µs per evaluation"
        )
    ratio = best["with"][0] / best["without"][0]
    print(f"    ratio with / without: {ratio:.3f}x (target <= {TARGET}x: {'within' if ratio <= TARGET else 'ABOVE'})")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 minutes of trades instead of an hour")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5.0, help="trades per second per symbol")
    args = parser.parse_args()
    duration = 1_200_000 if args.quick else 3_600_000
    plain = parse_strategy(FAST)
    features = engine_features(plain)
    streams = _streams(duration, args.rate)
    trades = sum(len(s) for s in streams)
    with tempfile.TemporaryDirectory() as folder:
        hours = 6 * 3_600_000  # more rows than the measured run: trees of the training's full size
        x, y = training_rows(plain, features, slices_of(_streams(hours, args.rate), hours, 60_000))
        path, sha256 = model_file(features, x, y, Path(folder))
        modelled = parse_strategy({**FAST, "model": {"file": str(path), "sha256": sha256}})
        model = modelled.model.compiled
        print(f"model: LightGBM, {len(model.roots)} trees, {len(features)} features, fitted on {len(y):,} engine rows")
        for label, batch_ms in (("live (1 s of input per call)", 1_000), ("replay (60 s per call)", 60_000)):
            print(f"{label}: {trades:,} trades of 4 symbols at {args.rate:g}/s each, best of {args.repeats}")
            compare(plain, modelled, slices_of(streams, duration, batch_ms), args.repeats)


if __name__ == "__main__":
    main()
