"""Training the confidence model on 1 M evaluations (target: <= 2 min on this machine).

What runs (the same code as ``tapeflow model train`` after its export): a table shaped like the training
export (1 M evaluations of 4 symbols, one a second each, a 60-minute label per row, 66 feature columns as
the v53 export with every detector on has: layer points, ``in_*`` inputs with heavy tails, 3 % missing
values, 24 detector columns) -> ``model_data.from_table`` (the dataset) -> ``model_train.train``: the
logistic regression and LightGBM, each by purged 5-fold with a one-hour embargo, isotonic calibration
(cross-fitted reliability too), the fit on every row, importances and SHAP values. A planted effect makes
the labels learnable (the AUCs are printed beside the best possible one).

Printed: wall time per stage and in total with the ratio to the target, the process's CPU seconds (what
the work costs whatever the neighbours do) and the load average before and after: on a shared machine a
wall time with a load above the 2 cores is the neighbours' as much as ours.
``--ablation`` adds the fits without the detector columns, ``--walk-forward`` the walk-forward windows
(both part of a default ``tapeflow model train``; the target counts the purged K-fold with calibration).

Run: ``.venv/bin/python -m benchmarks.bench_model_train [--rows 1000000] [--threads 2] [--ablation] [--walk-forward]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa

from backtest.research.model import sigmoid
from backtest.research.model_data import DETECTOR_COLUMNS, from_table
from backtest.research.model_train import TrainOptions, train
from backtest.research.windows import WalkForwardSpec

TARGET_S = 120.0
START_MS = 1_704_067_200_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
HOUR_MS = 3_600_000
DETECTORS = sorted(DETECTOR_COLUMNS)[:24]
LAYERS = [f"layer_{name}" for name in ("cvd", "large", "whale", "obi", "confirmation", "funding")]


def export_like(rows: int, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """A table with the export's columns that ``from_table`` reads, and the true win probability."""
    rng = np.random.default_rng(seed)
    per_symbol = rows // len(SYMBOLS)
    t = np.tile(START_MS + 1000 * np.arange(per_symbol, dtype=np.int64), len(SYMBOLS))
    n = len(t)
    symbol = np.repeat(np.array(SYMBOLS, dtype=object), per_symbol)
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    inputs = [f"in_x{j}" for j in range(66 - len(DETECTORS) - len(LAYERS) - 3)]
    columns: dict[str, np.ndarray] = {}
    for name in ["score", "raw_score", *LAYERS, *inputs, *DETECTORS]:
        values = rng.standard_t(4, size=n)  # heavy tails, as order-flow inputs have
        values[rng.random(n) < 0.03] = np.nan
        columns[name] = values
    truth = sigmoid(
        0.6 * np.nan_to_num(columns["score"])
        - 0.4 * np.nan_to_num(columns[inputs[0]])
        + 0.3 * sign * np.nan_to_num(columns[DETECTORS[0]])
        - 0.3
    )
    y = (rng.random(n) < truth).astype(np.float64)
    table = pa.table(
        {
            "symbol": pa.array(symbol.tolist(), type=pa.string()),
            "eval_time": pa.array(t, type=pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "direction": pa.array(np.where(sign > 0, "LONG", "SHORT").tolist(), type=pa.string()),
            "block_reason": pa.array(["score"] * n, type=pa.string()),
            **{name: pa.array(values, from_pandas=True) for name, values in columns.items()},
            "y_binary_60m": pa.array(y, type=pa.float64()).cast(pa.int8()),
        }
    )
    return table, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ablation", action="store_true", help="also fit without the detector columns")
    parser.add_argument("--walk-forward", action="store_true", help="also run walk-forward windows")
    args = parser.parse_args()

    load_before = os.getloadavg()
    table, truth = export_like(args.rows)
    began, cpu = time.perf_counter(), time.process_time()
    data = from_table(table, "y_binary_60m", HOUR_MS)
    built = time.perf_counter() - began
    print(
        f"dataset: {len(data):,} evaluations x {len(data.features)} features "
        f"({len(data.detector_features)} from detectors) in {built:.1f} s"
    )
    span = int(data.t0.max() - data.t0.min()) + 1000
    spec = WalkForwardSpec(span // 2, span // 10, span // 10, HOUR_MS) if args.walk_forward else None
    options = TrainOptions(5, HOUR_MS, "isotonic", spec, args.ablation, threads=args.threads)
    starts: list[tuple[str, float, float]] = []  # each fit's name, when it began (then its predictions, metrics)

    def on_fit(what: str) -> None:
        starts.append((what, time.perf_counter(), time.process_time()))

    fit_began = time.perf_counter()
    trained = train(data, options, int(data.t0.min()), int(data.t0.max()) + 1000, on_fit)
    ended, cpu_end = time.perf_counter(), time.process_time()
    total = ended - began
    cpu_s = cpu_end - cpu
    for (what, at, cpu_at), (_next, until, cpu_until) in zip(starts, [*starts[1:], ("end", ended, cpu_end)]):
        print(f"  {what:<40} {until - at:6.1f} s wall {cpu_until - cpu_at:6.1f} s CPU")
    from sklearn.metrics import roc_auc_score

    order = np.argsort(np.asarray(table.column("eval_time").cast(pa.int64())), kind="stable")  # the dataset's order
    optimum = roc_auc_score(data.y, truth[order])
    for name, report in trained.doc["learners"].items():
        print(
            f"{name}: out-of-fold AUC {report['pooled']['auc']:.4f} (best possible {optimum:.4f}), "
            f"calibrated Brier {report['calibrated']['brier']:.4f}"
        )
    print(f"training: {time.perf_counter() - fit_began:.1f} s; with the dataset {total:.1f} s")
    print(f"CPU: {cpu_s:.1f} s of this process ({args.threads} threads per fit)")
    print(
        f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} "
        f"(1 min; this machine has {os.cpu_count()} cores)"
    )
    print(f"total {total:.1f} s, target {TARGET_S:.0f} s: ratio {total / TARGET_S:.2f}")


if __name__ == "__main__":
    main()
