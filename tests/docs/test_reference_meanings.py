"""Every key of the generated strategy, watchlist-strategy, executor and settings reference says what it means.

The meaning column comes from each pydantic field's ``description`` (the same text `--help` and validation
errors can show), so a key added without one would reach the reference as a bare name and a reader could
only guess at its unit and effect. The pages are generated here, not read from docs/reference/: that the
committed pages equal the generator's output is test_reference.py's job.
"""

from __future__ import annotations

import importlib.util
import re
import sys

from tests.docs.runnable import DOCS

_spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
_module = importlib.util.module_from_spec(_spec)
gen_reference = sys.modules.setdefault("gen_reference", _module)
if gen_reference is _module:
    _spec.loader.exec_module(_module)

# what gen_settings adds to every secret's or file-backed setting's meaning: not a meaning by itself
_BOILERPLATE = (
    re.compile(r"\*\*secret\*\* \(masked in `tapeflow status`, never logged\)\.?"),
    re.compile(r"Also from a file: `TAPEFLOW_[A-Z0-9_]+_FILE=/path`\."),
)


def key_meanings(page: str, key_column: str) -> list[tuple[str, str, str]]:
    """(section heading, key, meaning) of every row of every table of `page` that has a `meaning` column;
    the key is the cell of the column headed `key_column` (or `key`), without its backticks."""
    rows: list[tuple[str, str, str]] = []
    section, head = "", None
    for line in page.splitlines():
        if line.startswith("#"):
            section, head = line.lstrip("#").strip(), None
        elif not line.startswith("|"):
            head = None
        elif line.startswith("|---"):
            continue
        else:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if head is None:
                head = cells
            elif "meaning" in head:
                column = head.index(key_column) if key_column in head else head.index("key")
                rows.append((section, cells[column].strip("`"), cells[head.index("meaning")]))
    return rows


def blank(meaning: str) -> bool:
    for pattern in _BOILERPLATE:
        meaning = pattern.sub("", meaning)
    return not meaning.strip(" .")


def _reachable_fields(*roots: type) -> int:
    """How many keys the models under `roots` have, each model counted once (as the reference lists them)."""
    from pydantic import BaseModel

    seen: set[type] = set()
    todo = list(roots)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo += [m for m in gen_reference._models_in(field.annotation) if issubclass(m, BaseModel)]
    return sum(len(m.model_fields) for m in seen)


def test_every_strategy_watchlist_and_executor_key_has_a_meaning():
    rows = key_meanings(gen_reference.gen_strategy(), "key")
    missing = [f"{section}: {key}" for section, key, meaning in rows if blank(meaning)]
    assert missing == [], (
        f"{len(missing)} of {len(rows)} keys in reference/strategy.md have no meaning; give each "
        "a Field(description=...) in its pydantic model: " + ", ".join(missing)
    )


def test_every_setting_has_a_meaning():
    rows = key_meanings(gen_reference.gen_settings(), "YAML key")
    missing = [f"{section}: {key}" for section, key, meaning in rows if blank(meaning)]
    assert missing == [], (
        f"{len(missing)} of {len(rows)} settings in reference/settings.md have no meaning; give "
        "each a Field(description=...) in tapeflow_runtime/settings.py: " + ", ".join(missing)
    )


def test_the_strategy_reference_lists_every_key_of_every_model():
    """A model whose table went missing (two models of one class name, one taken for the other) would hide
    its keys from the check above: the page has a row for every field of every model it reaches."""
    from execution.config import ExecutorConfig
    from stream_apps.core.strategy import StrategyConfig
    from stream_apps.watchlist.strategy import WatchlistStrategy
    from tapeflow_runtime.settings import Settings, TableRetention

    strategy_rows = key_meanings(gen_reference.gen_strategy(), "key")
    fields = _reachable_fields(StrategyConfig, WatchlistStrategy, ExecutorConfig)
    assert len(strategy_rows) == fields, (
        f"reference/strategy.md lists {len(strategy_rows)} keys, the models have "
        f"{fields}: a model's table is missing or doubled"
    )
    settings_rows = key_meanings(gen_reference.gen_settings(), "YAML key")
    assert len(settings_rows) == len(Settings.model_fields) + len(TableRetention.model_fields)


def test_a_blank_meaning_is_found_and_named():
    page = (
        "### `Exits`\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
        "| `tp1_r` | float | **required** | first take-profit |\n| `tp2_r` | float | **required** |  |\n\n"
        "## Settings\n\n| environment variable | YAML key | type | default | meaning |\n|---|---|---|---|---|\n"
        "| `TAPEFLOW_X` | `x` | str | unset | **secret** (masked in `tapeflow status`, never logged). "
        "Also from a file: `TAPEFLOW_X_FILE=/path`. |\n"
    )
    blanks = [(s, k) for s, k, m in key_meanings(page, "YAML key") if blank(m)]
    assert blanks == [("`Exits`", "tp2_r"), ("Settings", "x")]
