"""One optuna study, shared by every process that searches it: in memory, or in an RDB storage that
several processes or machines use at once (``tapeflow research search --storage URL``).

What makes a shared study give the same answer as one process (tested with two workers on PostgreSQL):

- **Slots, not workers, decide a candidate.** Every trial claims a *slot*: the lowest of ``0 ..
  trials-1`` (the budget) that no complete or running trial numbered below it holds, so trials asked
  in order get slots in order whoever asks; a trial that finds none free is told FAIL
  (``over_budget``) and the worker stops asking. The grid sampler takes
  the lattice point of the slot, and a candidate is named by its slot, so a grid search tries the same
  candidates under the same names whoever evaluates them.
- **TPE's random start is seeded per trial.** ``SlotSeededTPE`` draws the start-up trials (fewer than
  ``n_startup_trials`` complete when asked) from a generator seeded by ``(seed, trial number)``, not from
  one stream per process, so those candidates do not depend on which worker asked or in what order.
  Later trials are optuna's TPE with ``constant_liar`` (running trials count as bad, so parallel workers
  do not all ask for the same point); their candidates depend on what completed first, as in any
  parallel TPE.
- **Each trial carries what the report needs.** Its parameters, result and hourly net R (the series
  the deflated Sharpe ratio and PBO are computed from) are user attributes, so any worker builds the
  whole study's report, and ties go to the lowest slot, as in one process.
- **A worker that dies does not stall the others.** With an RDB storage every running trial records a
  heartbeat (``HEARTBEAT_S``); a trial whose worker stopped beating for ``GRACE_S`` is failed by the next
  worker that looks (optuna's ``fail_stale_trials``), its slot is claimed again, and the workers wait
  for every running trial before they report.

Hand-written around optuna's ask/tell interface because optuna's own parallel runner
(``study.optimize``) evaluates one trial per call, and the feature store scores a whole batch of
candidates in one pass per symbol.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_S = 10
GRACE_S = 60
COUNTED = (TrialState.COMPLETE, TrialState.RUNNING)


class StudyError(ValueError):
    """A study that cannot be opened or joined as asked (the message says why)."""


class SlotSeededTPE(optuna.samplers.BaseSampler):
    """optuna's TPE (``constant_liar``) whose random start-up draws depend only on ``(seed, number)``."""

    def __init__(self, seed: int, n_startup_trials: int = 10) -> None:
        self._seed = seed
        self._n_startup = n_startup_trials
        self._tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, constant_liar=True)
        self._random: dict[int, optuna.samplers.RandomSampler] = {}

    def _random_for(self, number: int) -> optuna.samplers.RandomSampler:
        seed = int(np.random.SeedSequence([self._seed, number]).generate_state(1)[0])
        return optuna.samplers.RandomSampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < self._n_startup:
            self._random[trial.number] = self._random_for(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        start = self._random.get(trial.number)
        if start is not None:
            return start.sample_independent(study, trial, param_name, param_distribution)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._random.pop(trial.number, None)
        self._tpe.after_trial(study, trial, state, values)


def sqlalchemy_url(storage: str) -> str:
    """An optuna RDB URL from a SQLAlchemy URL, a ``postgresql://`` URL or a libpq conninfo
    (``host=... port=...``, what the stack's endpoints give); PostgreSQL goes through psycopg 3."""
    text = storage.strip()
    if "://" not in text and "=" in text:
        from psycopg.conninfo import conninfo_to_dict
        from sqlalchemy.engine import URL

        params = conninfo_to_dict(text)
        return URL.create(
            "postgresql+psycopg",
            username=params.pop("user", None),
            password=params.pop("password", None),
            host=params.pop("host", None),
            port=int(params["port"]) if "port" in params else None,
            database=params.pop("dbname", None),
            query={k: str(v) for k, v in params.items() if k != "port"},
        ).render_as_string(hide_password=False)
    for prefix in ("postgresql://", "postgres://"):
        if text.startswith(prefix):
            return "postgresql+psycopg://" + text[len(prefix) :]
    return text


def open_storage(storage: str | None):
    """``None``: in memory (this process only). Otherwise an RDB storage with heartbeats. On a PostgreSQL
    database that has the schema ``optuna`` (tapeflow's migration 0013 makes it) optuna's tables go
    there, whoever connects and however the URL is written, so every worker finds the same studies."""
    if storage is None:
        return optuna.storages.InMemoryStorage()
    url = sqlalchemy_url(storage)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    try:
        if not url.startswith("postgresql"):
            return _rdb(url, kwargs)
        import sqlalchemy

        probe = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with probe.connect() as conn:
                if conn.execute(sqlalchemy.text("SELECT to_regnamespace('optuna') IS NOT NULL")).scalar():
                    kwargs["connect_args"] = {"options": "-c search_path=optuna"}
                # workers starting together would each create optuna's tables (and collide on the
                # catalogue): one at a time, under a session advisory lock
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext('tapeflow research storage'))"))
                try:
                    return _rdb(url, kwargs)
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext('tapeflow research storage'))"))
        finally:
            probe.dispose()
    except Exception as error:  # SQLAlchemy's errors name the URL with its password: keep the cause only
        raise StudyError(f"study storage: {type(error).__name__}: {_first_line(error)}") from None


def _rdb(url: str, engine_kwargs: dict[str, Any]):
    with _quiet():
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
        )


@contextlib.contextmanager
def _quiet():
    """optuna warns that heartbeats are experimental and meant for ``Study.optimize``: we use them
    with ask/tell on purpose (module docstring), and a user need not read that on every run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        yield


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


def inputs_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Claim:
    trial: optuna.trial.Trial
    slot: int


class SharedStudy:
    """A study and the slots of this process's running trials (see the module docstring)."""

    def __init__(self, storage, name: str, sampler: str, seed: int, inputs: dict) -> None:
        self.storage = storage
        self.name = name
        chosen = SlotSeededTPE(seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self.study = optuna.create_study(
                storage=storage, study_name=name, direction="maximize", sampler=chosen, load_if_exists=True
            )
        except Exception as error:
            raise StudyError(f"study {name!r}: {type(error).__name__}: {_first_line(error)}") from None
        key = inputs_key(inputs)
        found = self.study.user_attrs.get("inputs_key")
        if found is None:
            self.study.set_user_attr("inputs_key", key)
            self.study.set_user_attr("inputs", json.loads(json.dumps(inputs, default=str)))
        elif found != key:
            raise StudyError(
                f"study {name!r} was made for other inputs ({self.study.user_attrs.get('inputs')}); "
                "every worker of a study needs the same strategy, source, symbols, range, trials, "
                "sampler, objective, seed and minimum trades (or another --study name)"
            )
        self._beating: dict[int, int] = {}  # trial number -> trial id, beaten by the heartbeat thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._heartbeats():
            self._thread = threading.Thread(target=self._beat, name="study-heartbeat", daemon=True)
            self._thread.start()

    def _heartbeats(self) -> bool:
        return isinstance(self.storage, optuna.storages.RDBStorage)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S / 2):
            with self._lock:
                ids = list(self._beating.values())
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # nosec B110 # a lost connection: the pool reconnects on the next beat
                    pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def counted(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False, states=COUNTED) if not t.user_attrs.get("over_budget")]

    def fail_stale(self) -> None:
        if self._heartbeats():
            with _quiet():
                optuna.storages.fail_stale_trials(self.study)

    def claim(self, want: int, budget: int) -> list[Claim]:
        """Up to ``want`` new trials with their slots (below ``budget``)."""
        claims: list[Claim] = []
        for _ in range(want):
            with _quiet():
                trial = self.study.ask()
            slot = self._free_slot(trial.number, budget)
            if slot is None:
                trial.set_user_attr("over_budget", True)
                self.study.tell(trial, state=TrialState.FAIL)
                break
            trial.set_user_attr("slot", slot)
            if self._heartbeats():  # at once: a worker killed before its first beat must still go stale
                self.storage.record_heartbeat(trial._trial_id)
            with self._lock:
                self._beating[trial.number] = trial._trial_id
            claims.append(Claim(trial, slot))
        return claims

    def _free_slot(self, number: int, budget: int, settle_s: float = 30.0) -> int | None:
        """The lowest slot that no counted trial numbered below ``number`` holds. A trial asked just
        before this one gets its slot (or its over-budget mark) right after its ask: wait for it, so two
        workers asking at once never take the same slot."""
        deadline = time.monotonic() + settle_s
        while True:
            below = [t for t in self.study.get_trials(deepcopy=False, states=COUNTED) if t.number < number]
            pending = [t for t in below if "slot" not in t.user_attrs and not t.user_attrs.get("over_budget")]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        taken = {t.user_attrs["slot"] for t in below if "slot" in t.user_attrs}
        return next((s for s in range(budget) if s not in taken), None)

    def tell(self, claim: Claim, value: float, attrs: dict[str, Any]) -> None:
        """Record a result; a trial failed meanwhile as stale (this worker was too slow to beat) is
        left to whoever claimed its slot again."""
        with self._lock:
            self._beating.pop(claim.trial.number, None)
        try:
            for key, attr in attrs.items():
                claim.trial.set_user_attr(key, attr)
            self.study.tell(claim.trial, value)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            if self.study._storage.get_trial(claim.trial._trial_id).state != TrialState.FAIL:
                raise

    def running_elsewhere(self) -> int:
        with self._lock:
            mine = set(self._beating)
        return sum(
            1
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number not in mine and not t.user_attrs.get("over_budget")
        )

    def complete(self) -> list[FrozenTrial]:
        """Every complete trial of the budget, by slot (a slot told twice after a stale failure
        keeps its first)."""
        by_slot: dict[int, FrozenTrial] = {}
        for t in sorted(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
            slot = t.user_attrs.get("slot")
            if slot is not None and slot not in by_slot:
                by_slot[slot] = t
        return [by_slot[s] for s in sorted(by_slot)]


def run_study(
    study: SharedStudy,
    budget: int,
    batch: int,
    evaluate_batch: Callable[[list[Claim]], None],
    wait: Callable[[int], None] | None = None,
    poll_s: float = 1.0,
) -> None:
    """Claim and evaluate batches until the budget is claimed, then wait for the other workers'
    running trials (failing stale ones and claiming their slots again)."""
    while True:
        study.fail_stale()
        left = budget - len(study.counted())
        claims = study.claim(min(batch, left), budget) if left > 0 else []
        if claims:
            evaluate_batch(claims)
            continue
        others = study.running_elsewhere()
        if not others and len(study.counted()) >= budget:
            return
        if wait is not None:
            wait(others)
        time.sleep(poll_s)
