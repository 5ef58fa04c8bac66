"""Bytecode written once, before pytest-xdist starts its workers (`tests/conftest.py`, the controller only).

Why: this host's shells set ``PYTHONDONTWRITEBYTECODE=1``, and a fresh clone has no bytecode either, so
every process of a run compiled from source every module of the repository it imports: each of the
~250 `tapeflow` subprocesses the tests start (an engine imports 86 of them: ~0.2 CPU-s of compiling)
and each of the 4 workers, which also rewrites the asserts of all ~205 test modules while collecting
(~45 % of a worker's collection CPU, measured with cProfile). Reading bytecode is allowed with that
variable set, only writing it is not, so the controller writes it once here:

- the application packages' ``__pycache__/*.pyc`` (``compileall``: Python's own timestamp pycs, those
  it writes itself without the variable; a pyc whose source changed since is not used, and
  ``compileall`` skips the ones that are up to date);
- pytest's own rewritten pycs of the test modules and conftests (``__pycache__/*-pytest-*.pyc``),
  with pytest's own functions, as a worker would write them without the variable: pytest reads them
  back only when their source hash matches.

Both go where Python and pytest put them anyway (``__pycache__`` beside the module, ignored by git;
numba's kernel cache is there too). Nothing here changes what a test runs: a missing or stale pyc
falls back to compiling from source, as before. Measured in benchmarks/RESULTS.md ("Bytecode
written once")."""

from __future__ import annotations

import compileall
import sys
from pathlib import Path

from tests.support.paths import REPO

#: the packages the services and the CLI import (tests/test_layers.py's layers) and the tests' helpers
PACKAGES = (
    "schemas",
    "tapeflow_runtime",
    "producers",
    "sinks",
    "stream_apps",
    "fake_exchange",
    "tapeflow_notify",
    "execution",
    "backtest",
    "tapeflow_ui",
    "tapeflow",
    "benchmarks",
    "tests/support",
)


def write_bytecode(config) -> None:
    """Compile the packages and rewrite the test modules; a failure only costs the gain."""
    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)
    _rewrite_test_modules(config)


def _rewrite_test_modules(config) -> None:
    try:  # pytest's own rewrite and pyc writer (private: if they move, the workers rewrite as before)
        from _pytest.assertion import assertstate_key
        from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc, _rewrite_test, _write_pyc, get_cache_dir
    except ImportError:
        return
    if config.getoption("assertmode", "rewrite") != "rewrite" or assertstate_key not in config.stash:
        return
    state = config.stash[assertstate_key]
    for fn in _test_modules(config):
        cache_dir = get_cache_dir(fn)
        pyc = cache_dir / (fn.name[:-3] + PYC_TAIL)
        if _read_pyc(fn, pyc) is not None:
            continue  # already written for this source
        try:
            cache_dir.mkdir(exist_ok=True)
            source_hash, co = _rewrite_test(fn, config)
        except (OSError, SyntaxError) as error:  # the worker's collection reports it, as before
            print(f"bytecode: {fn}: {error}", file=sys.stderr)
            continue
        _write_pyc(state, co, source_hash, pyc)


def _test_modules(config) -> list[Path]:
    """The test modules and conftests the workers will collect: those under the run's paths (the
    whole of tests/ for `make test`; a run of a few files rewrites only those)."""
    here = Path(config.invocation_params.dir)
    args = [a.split("::", 1)[0] for a in config.args if not a.startswith("-")] or ["tests"]
    found: set[Path] = set()
    for arg in args:
        path = (here / arg).resolve()
        if path.is_dir():
            found.update(p for p in path.rglob("*.py") if p.name.startswith("test_") or p.name == "conftest.py")
        elif path.is_file():
            found.add(path)
            found.update(c for c in (d / "conftest.py" for d in path.parents) if c.is_file())
    return sorted(p for p in found if p.suffix == ".py" and REPO in p.parents)
