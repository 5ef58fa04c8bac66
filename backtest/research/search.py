"""Parameter search and walk-forward over a feature store, with overfitting guards.

Flow of ``search``: candidates (grid or optuna TPE, in batches) -> every candidate scored and decided
on the stored features with the engine's own ``score_frames``/``decide_frame`` (one process per
symbol, the machine's cores in parallel) -> research trades (``simulate``) -> the objective on the
trades of the range (purged: decided and closed inside it). The report carries the number of trials,
the deflated Sharpe ratio of the winner given that number, the probability of backtest overfitting
(CSCV over the trials' hourly net R), every variant's p-value of "net R per trade > 0" (stationary
bootstrap over its trades, ``fdr``) with its Benjamini-Hochberg q-value across all the trials (how many
variants survive a 5 % false-discovery rate) and, when a hold-out was kept, the winner's result on it.

``walk_forward`` runs a search on each training window only and reports the chosen configuration's
out-of-sample result on the following test window (see ``windows``); the hold-out at the end is
touched once, by the configuration chosen on the last training window.

Objectives: ``net_r`` (sum of net R), ``sharpe`` (mean / std of daily net R, zero days included, as
the backtest report computes it), ``pf`` (profit factor); a candidate with fewer than
``min_trades`` trades scores -inf. The chosen configurations are written as strategy files (YAML,
validated, with their ``config_hash``) ready for ``tapeflow engine --strategy``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from backtest.metrics import max_drawdown, profit_factor, sharpe, utc_day
from stream_apps.core.cooldown import CooldownBook
from stream_apps.core.decision import decide_frame
from stream_apps.core.scoring import score_frames
from stream_apps.core.strategy import StrategyConfig, load_strategy

from .fdr import DEFAULT_RESAMPLES, benjamini_hochberg, bootstrap_p_value, discoveries
from .overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting, return_moments
from .simulate import Signals, Trades, simulate
from .space import Candidate, build, grid, suggest
from .store import DAY_MS, FeatureStore
from .study import Claim, SharedStudy, inputs_key, open_storage, run_study
from .windows import Window, rolling_windows

OBJECTIVES = ("net_r", "sharpe", "pf")
GUARD_PERIOD_MS = 3_600_000  # hourly net R: a month gives 720 periods, enough for 16 CSCV blocks
FDR_ALPHA = 0.05  # a variant "survives" when its BH q-value is at most this


# ------------------------------------------------------------------------------------------------
# evaluation of candidates on the store
# ------------------------------------------------------------------------------------------------
def _symbol_trades(args: tuple[str, str, list[StrategyConfig], int, int]) -> tuple[str, list[Trades]]:
    """Worker: one symbol's research trades of every candidate over [from_ms, to_ms)."""
    directory, symbol, configs, from_ms, to_ms = args
    store = FeatureStore(directory)
    active = [c for c in configs if c.applies_to(symbol)]
    books = [CooldownBook() for _ in active]
    found: list[dict[str, list]] = [{"t": [], "s": [], "a": [], "f": [], "m": [], "sc": []} for _ in active]
    for frame in store.frames(symbol):
        keep = (frame.time_ms >= from_ms) & (frame.time_ms < to_ms)
        if not keep.any() or not active:
            continue
        if not keep.all():
            frame = frame.take(np.flatnonzero(keep))
        for i, (cfg, scores) in enumerate(zip(active, score_frames(frame, active))):
            decided = decide_frame(frame, scores, cfg, books[i])
            for row, plan in decided.plans.items():
                f = found[i]
                f["t"].append(int(frame.time_ms[row]))
                f["s"].append(1 if plan.direction == "LONG" else -1)
                f["a"].append(plan.atr)
                f["f"].append(decided.flips[row])
                f["m"].append(plan.risk_multiplier)
                f["sc"].append(float(scores.score[row]))
    bars = store.bars(symbol)
    out = []
    by_hash = {cfg.config_hash: i for i, cfg in enumerate(active)}
    for cfg in configs:
        i = by_hash.get(cfg.config_hash)
        if i is None:
            out.append(Trades.empty())
            continue
        f = found[i]
        signals = Signals(
            np.asarray(f["t"], dtype=np.int64),
            np.asarray(f["s"], dtype=np.int8),
            np.asarray(f["a"], dtype=np.float64),
            np.asarray(f["f"], dtype=bool),
            np.asarray(f["m"], dtype=np.float64),
            np.asarray(f["sc"], dtype=np.float64),
        )
        out.append(simulate(signals, cfg, bars, symbol))
    return symbol, out


def evaluate(
    store: FeatureStore,
    configs: Sequence[StrategyConfig],
    from_ms: int,
    to_ms: int,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Trades]:
    """Research trades of every candidate (all symbols) whose signals fall in [from_ms, to_ms)."""
    symbols = list(store.spec.symbols)
    tasks = [(str(store.directory), s, list(configs), from_ms, to_ms) for s in symbols]
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    per_symbol: dict[str, list[Trades]] = {}
    if workers <= 1:
        results = map(_symbol_trades, tasks)
        for symbol, trades in results:
            per_symbol[symbol] = trades
            if progress:
                progress(symbol)
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for symbol, trades in pool.imap_unordered(_symbol_trades, tasks):
                per_symbol[symbol] = trades
                if progress:
                    progress(symbol)
    return [Trades.concat([per_symbol[s][k] for s in symbols]) for k in range(len(configs))]


# ------------------------------------------------------------------------------------------------
# objective and metrics
# ------------------------------------------------------------------------------------------------
def period_series(trades: Trades, from_ms: int, to_ms: int, period_ms: int = DAY_MS) -> np.ndarray:
    """Net R realised per period (UTC days by default; by exit time) over the range, zero periods
    included."""
    first, last = from_ms // period_ms, (to_ms - 1) // period_ms
    out = np.zeros(last - first + 1)
    if len(trades):
        np.add.at(out, trades.exit_ms // period_ms - first, trades.pnl_r)
    return out


def daily_series(trades: Trades, from_ms: int, to_ms: int) -> np.ndarray:
    """Net R realised per UTC day (by exit time) over every day of the range, zero days included."""
    assert utc_day(from_ms) == from_ms // DAY_MS
    return period_series(trades, from_ms, to_ms, DAY_MS)


@dataclass(frozen=True)
class Result:
    trades: int
    net_r: float
    sharpe_per_day: float | None
    profit_factor: float | None
    max_drawdown_r: float
    win_rate: float | None

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def result_of(trades: Trades, from_ms: int, to_ms: int) -> Result:
    pnls = trades.pnl_r.tolist()
    s = sharpe(daily_series(trades, from_ms, to_ms).tolist())
    return Result(
        len(trades),
        float(sum(pnls)),
        s.per_day,
        profit_factor(pnls),
        max_drawdown(pnls),
        (sum(1 for p in pnls if p > 0) / len(pnls)) if pnls else None,
    )


def objective_value(result: Result, objective: str, min_trades: int) -> float:
    if result.trades < min_trades:
        return -math.inf
    if objective == "net_r":
        return result.net_r
    if objective == "sharpe":
        return result.sharpe_per_day if result.sharpe_per_day is not None else -math.inf
    if objective == "pf":
        if result.profit_factor is None:
            return math.inf if result.net_r > 0 else -math.inf
        return result.profit_factor
    raise ValueError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")


def in_range(trades: Trades, start: int, end: int) -> Trades:
    """Purged: trades decided at or after ``start`` and closed before ``end``."""
    return trades.select((trades.entry_ms >= start) & (trades.exit_ms < end))


# ------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------
@dataclass
class Trial:
    number: int  # the slot: the same candidate under the same name whoever evaluated it
    candidate: Candidate
    result: Result
    value: float
    series: np.ndarray = field(repr=False)  # hourly net R over the range (the guards' input)
    trades: Trades | None = field(default=None, repr=False)  # this process's trials only
    p_value: float | None = None  # "net R per trade > 0", stationary bootstrap (None: a study from before it)
    q_value: float | None = None  # Benjamini-Hochberg over every trial of the search


def trade_p_value(trades: Trades, slot: int) -> float:
    """One-sided stationary-bootstrap p-value of "mean net R per trade > 0" over the trades in entry order,
    seeded by the trial's slot: every worker of a shared study computes the same value for a trial."""
    order = np.lexsort((trades.pnl_r, trades.entry_ms))
    return bootstrap_p_value(trades.pnl_r[order], seed=1_000_003 + slot, resamples=DEFAULT_RESAMPLES)


@dataclass
class SearchReport:
    objective: str
    sampler: str
    from_ms: int
    to_ms: int
    trials: list[Trial]
    best: Trial
    dsr: float | None
    pbo: float | None
    holdout: Result | None = None
    holdout_range: tuple[int, int] | None = None
    study: str | None = None
    evaluated_here: int = 0

    @property
    def survivors(self) -> int:
        """Trials whose "net R per trade > 0" survives Benjamini-Hochberg at ``FDR_ALPHA``."""
        return discoveries([np.nan if t.q_value is None else t.q_value for t in self.trials], FDR_ALPHA)

    @property
    def tested(self) -> int:
        return sum(1 for t in self.trials if t.p_value is not None)

    def variants(self) -> list[dict]:
        """Every trial's row of the result table: its result, p-value and q-value, by slot."""
        return [
            {
                "slot": t.number,
                "name": t.candidate.config.name,
                "trades": t.result.trades,
                "net_r": t.result.net_r,
                "mean_r": t.result.net_r / t.result.trades if t.result.trades else None,
                "objective": t.value if math.isfinite(t.value) else None,
                "p_value": t.p_value,
                "q_value": t.q_value,
            }
            for t in sorted(self.trials, key=lambda t: t.number)
        ]

    def summary(self) -> dict:
        return {
            "objective": self.objective,
            "sampler": self.sampler,
            "range": [self.from_ms, self.to_ms],
            "trials": len(self.trials),
            "study": self.study,
            "evaluated_here": self.evaluated_here,
            "best": {
                "name": self.best.candidate.config.name,
                "config_hash": self.best.candidate.config.config_hash,
                "params": self.best.candidate.params,
                "result": self.best.result.as_dict(),
                "value": self.best.value,
            },
            "deflated_sharpe_ratio": self.dsr,
            "pbo": self.pbo,
            "false_discovery": {
                "hypothesis": "net R per trade > 0 (one-sided, stationary bootstrap over trades in entry order)",
                "method": "Benjamini-Hochberg",
                "alpha": FDR_ALPHA,
                "tested": self.tested,
                "survivors": self.survivors,
                "best_q_value": self.best.q_value,
            },
            "variants": self.variants(),
            "holdout": None
            if self.holdout is None
            else {"range": list(self.holdout_range or ()), "result": self.holdout.as_dict()},
        }


def study_inputs(
    store: FeatureStore,
    base: StrategyConfig,
    *,
    trials: int,
    from_ms: int,
    to_ms: int,
    sampler: str,
    objective: str,
    min_trades: int,
    seed: int,
) -> dict:
    """What every worker of one study must share: a worker with other inputs is refused."""
    spec = store.spec
    return {
        "base": base.config_hash,
        "source": spec.source,
        "symbols": list(spec.symbols),
        "range": [from_ms, to_ms],
        "trials": trials,
        "sampler": sampler,
        "objective": objective,
        "min_trades": min_trades,
        "seed": seed,
    }


def _check_choices(objective: str, sampler: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    if sampler not in ("tpe", "grid"):
        raise ValueError("sampler must be tpe or grid")


@dataclass
class _BatchEvaluator:
    """Evaluates the trials this worker claimed, batch by batch: their candidates' trades, results and
    objective values, kept here (``mine``) and told to the shared study."""

    store: FeatureStore
    base: StrategyConfig
    name: str
    sampler: str
    grid_params: list[dict]
    from_ms: int
    to_ms: int
    objective: str
    min_trades: int
    workers: int | None
    shared: SharedStudy
    bar: tqdm
    mine: dict[int, Trial] = field(default_factory=dict)

    def evaluate_batch(self, claims: list[Claim]) -> None:
        base, name, from_ms, to_ms = self.base, self.name, self.from_ms, self.to_ms
        params = [suggest(c.trial, base) if self.sampler == "tpe" else self.grid_params[c.slot] for c in claims]
        candidates = [_candidate(base, p, name, c.slot) for c, p in zip(claims, params)]
        all_trades = evaluate(self.store, [c.config for c in candidates], from_ms, to_ms, self.workers)
        for claim, candidate, trades in zip(claims, candidates, all_trades):
            self._record(claim, candidate, in_range(trades, from_ms, to_ms))
        self.bar.update(len(claims))

    def _record(self, claim: Claim, candidate: Candidate, trades: Trades) -> None:
        """One evaluated trial: kept as this worker's and told to the shared study."""
        result = result_of(trades, self.from_ms, self.to_ms)
        value = objective_value(result, self.objective, self.min_trades)
        series = period_series(trades, self.from_ms, self.to_ms, GUARD_PERIOD_MS)
        p_value = trade_p_value(trades, claim.slot)
        self.mine[claim.slot] = Trial(claim.slot, candidate, result, value, series, trades, p_value)
        self.shared.tell(
            claim,
            value if math.isfinite(value) else -1e9,
            {
                "params": candidate.params,
                "result": result.as_dict(),
                "objective": value if math.isfinite(value) else None,
                "series": series.tolist(),
                "p_value": p_value,
            },
        )


def search(
    store: FeatureStore,
    base: StrategyConfig,
    *,
    trials: int,
    from_ms: int,
    to_ms: int,
    sampler: str = "tpe",
    objective: str = "net_r",
    min_trades: int = 20,
    batch: int = 25,
    seed: int = 0,
    workers: int | None = None,
    name: str = "search",
    show_progress: bool = True,
    storage: str | None = None,
    study_name: str | None = None,
) -> SearchReport:
    """``trials`` candidates on [from_ms, to_ms) (see the module docstring); batches of ``batch``.

    ``storage`` (an optuna RDB URL or a PostgreSQL conninfo) shares the study with every other process
    searching the same ``study_name`` there (``backtest.research.study``): they split the trials and each
    reports the whole study. Without it the study lives in this process."""
    _check_choices(objective, sampler)
    grid_params = list(grid(base, trials)) if sampler == "grid" else []
    budget = len(grid_params) if sampler == "grid" else trials
    inputs = study_inputs(
        store,
        base,
        trials=trials,
        from_ms=from_ms,
        to_ms=to_ms,
        sampler=sampler,
        objective=objective,
        min_trades=min_trades,
        seed=seed,
    )
    study_name = study_name or f"{base.name}-{name}-{inputs_key(inputs)}"
    shared = SharedStudy(open_storage(storage), study_name, sampler, seed, inputs)
    bar = tqdm(total=budget, desc=f"{name} ({sampler})", unit="config", disable=not show_progress, leave=False)
    evaluator = _BatchEvaluator(
        store, base, name, sampler, grid_params, from_ms, to_ms, objective, min_trades, workers, shared, bar
    )
    mine = evaluator.mine

    def waiting(others: int) -> None:
        bar.set_postfix_str(f"waiting for {others} trial(s) of other workers")

    try:
        run_study(shared, budget, batch, evaluator.evaluate_batch, waiting)
        done = [mine.get(t.user_attrs["slot"]) or _stored_trial(t, base, name) for t in shared.complete()]
    finally:
        bar.close()
        shared.close()
    if not done:
        raise ValueError("the search has no complete trial")
    q_values = benjamini_hochberg([np.nan if t.p_value is None else t.p_value for t in done])
    for trial, q in zip(done, q_values.tolist()):
        trial.q_value = None if math.isnan(q) else q
    best = max(done, key=lambda t: (t.value, -t.number))
    return SearchReport(
        objective,
        sampler,
        from_ms,
        to_ms,
        done,
        best,
        *_guards(done, best),
        study=study_name if storage is not None else None,
        evaluated_here=len(mine),
    )


def _candidate(base: StrategyConfig, params: dict, name: str, slot: int) -> Candidate:
    """The candidate of a slot, named by it: the same name whichever worker builds it."""
    return Candidate(params, build(base, params, f"{base.name}_{name}_{slot:03d}"))


def _stored_trial(trial, base: StrategyConfig, name: str) -> Trial:
    """A trial another worker evaluated, from its user attributes."""
    attrs = trial.user_attrs
    slot = attrs["slot"]
    value = attrs["objective"]
    candidate = _candidate(base, attrs["params"], name, slot)
    return Trial(
        slot,
        candidate,
        Result(**attrs["result"]),
        -math.inf if value is None else value,
        np.asarray(attrs["series"], dtype=np.float64),
        p_value=attrs.get("p_value"),
    )


def _guards(trials: list[Trial], best: Trial) -> tuple[float | None, float | None]:
    """DSR of the winner given every trial's Sharpe ratio, and PBO by CSCV, both on hourly net R
    (per-hour Sharpe ratios; a search range of days has too few days for either)."""
    series = np.column_stack([t.series for t in trials])
    best_column = trials.index(best)
    periods = len(series)
    dsr = None
    if periods > 2 and np.std(series[:, best_column]) > 0:
        sharpes = [return_moments(series[:, k]).sharpe for k in range(series.shape[1])]
        m = return_moments(series[:, best_column])
        variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
        try:
            dsr = deflated_sharpe_ratio(m.sharpe, len(trials), variance, m.n, m.skew, m.kurtosis)
        except ValueError:  # moments that give no variance of the Sharpe ratio
            dsr = None
    pbo = None
    blocks = min(16, periods // 2) // 2 * 2  # at least 2 periods per block
    if len(trials) >= 2 and blocks >= 2:
        pbo = probability_of_backtest_overfitting(series, blocks=blocks).pbo
    return dsr, pbo


# ------------------------------------------------------------------------------------------------
# walk-forward
# ------------------------------------------------------------------------------------------------
@dataclass
class WindowResult:
    window: Window
    search: SearchReport
    test: Result


def choose(window: Window, trades_by_candidate: Sequence[Trades], objective: str, min_trades: int) -> int:
    """Index of the candidate that is best on the window's training range only (purged)."""
    values = [
        objective_value(
            result_of(in_range(t, window.train_start, window.train_end), window.train_start, window.train_end),
            objective,
            min_trades,
        )
        for t in trades_by_candidate
    ]
    return max(range(len(values)), key=lambda k: (values[k], -k))


def walk_forward(
    store: FeatureStore,
    base: StrategyConfig,
    spec,
    *,
    trials: int,
    sampler: str = "tpe",
    objective: str = "net_r",
    min_trades: int = 20,
    batch: int = 25,
    seed: int = 0,
    workers: int | None = None,
    show_progress: bool = True,
    storage: str | None = None,
    study_name: str | None = None,
) -> tuple[list[WindowResult], SearchReport | None, Result | None]:
    """A search per training window, its winner tested on the window's test range; then the last
    winner once on the hold-out. Returns the windows, the last search and the hold-out result.
    With ``storage`` each window's search is a shared study (``STUDY-wN``)."""
    windows, holdout = rolling_windows(spec, store.spec.from_ms, store.spec.to_ms)
    out = []
    for window in tqdm(windows, desc="walk-forward", unit="window", disable=not show_progress):
        report = search(
            store,
            base,
            trials=trials,
            from_ms=window.train_start,
            to_ms=window.train_end,
            sampler=sampler,
            objective=objective,
            min_trades=min_trades,
            batch=batch,
            seed=seed + window.index,
            workers=workers,
            name=f"w{window.index}",
            show_progress=show_progress,
            storage=storage,
            study_name=f"{study_name}-w{window.index}" if study_name else None,
        )
        chosen = report.best.candidate.config
        [trades] = evaluate(store, [chosen], window.test_start, window.test_end, workers)
        out.append(
            WindowResult(
                window,
                report,
                result_of(in_range(trades, window.test_start, window.test_end), window.test_start, window.test_end),
            )
        )
    last = out[-1].search if out else None
    held = None
    if holdout is not None and last is not None:
        [trades] = evaluate(store, [last.best.candidate.config], *holdout, workers)
        held = result_of(in_range(trades, *holdout), *holdout)
        last.holdout, last.holdout_range = held, holdout
    return out, last, held


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------
def write_strategy(config: StrategyConfig, directory: str | Path) -> tuple[Path, str]:
    """The configuration as a strategy file; reloading it must give the same ``config_hash``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{config.name}.yaml"
    header = f"# {config.description}\n# config_hash: {config.config_hash}\n"
    path.write_text(header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    loaded = load_strategy(path)
    if loaded.config_hash != config.config_hash:
        raise RuntimeError(f"{path}: written strategy reloads with another config_hash")
    return path, config.config_hash


def write_report(directory: str | Path, payload: dict, name: str = "research.json") -> Path:
    """The report as JSON in ``directory`` (a search writes ``research.json``, a walk-forward
    ``walk-forward.json``, so both can share one ``--out`` without one replacing the other)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
