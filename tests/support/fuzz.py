"""One knob for every fuzz property (tests/**/test_*_fuzz.py): how many examples each one tries.

Why a module and not pytest options: the properties run in CI with a small count (fast, same inputs
every run), and `benchmarks/bench_fuzz.py` runs the very same tests with 10,000+ examples by setting
``TAPEFLOW_FUZZ_EXAMPLES`` before pytest starts. ``FUZZ`` is a plain hypothesis ``settings`` object used
as a decorator, so loading it changes no other test's settings.

- ``database=None``: hypothesis would otherwise write ``.hypothesis/`` into the working directory,
  and the suite writes nothing outside its temporary directories (tests/test_hermetic.py).
- ``derandomize=True``: CI tries the same inputs on every run, so a red run can be re-run and a green
  one is not luck; a failure found this way is kept as an explicit ``@example`` next to the property.
- ``deadline=None``: the machine is shared and loaded; a slow example is not a failure.
- hypothesis also keeps caches (``constants/``, ``unicode_data/``) in its home directory, ``.hypothesis/``
  in the working directory by default: under the suite it goes to the run's temporary cache directory
  (``XDG_CACHE_HOME``, set by tests/conftest.py before collection).

The helpers state the contract every parser at the edge is held to: it returns a value or raises
its own error type, whose message is one line and says what was wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

ENV = "TAPEFLOW_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 200


def examples() -> int:
    """Examples per property: ``TAPEFLOW_FUZZ_EXAMPLES`` or 200."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_EXAMPLES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r} is not a whole number of examples") from None
    if value < 1:
        raise ValueError(f"{ENV}={raw!r} must be at least 1")
    return value


if os.environ.get("XDG_CACHE_HOME"):
    set_hypothesis_home_dir(os.path.join(os.environ["XDG_CACHE_HOME"], "hypothesis"))

settings.register_profile(
    "tapeflow-fuzz",
    max_examples=examples(),
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("tapeflow-fuzz")


def one_line(exc: BaseException) -> str:
    """The message of `exc`, asserted to be one non-empty line (what a log line or a dead letter shows)."""
    text = str(exc)
    assert text.strip(), f"{type(exc).__name__} with an empty message"
    assert "\n" not in text and "\r" not in text, f"{type(exc).__name__} message spans lines: {text!r}"
    return text


def outcome(
    fn: Callable[..., Any], *args: Any, errors: type[BaseException] | tuple[type[BaseException], ...], **kwargs: Any
) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, the expected error, its message checked to be one line).

    Any other exception propagates and fails the property: that is the crash being looked for.
    """
    try:
        return fn(*args, **kwargs), None
    except errors as exc:
        one_line(exc)
        return None, exc


# --- JSON values as the exchanges' decoders hand them over (orjson: 64-bit ints, finite floats) ---
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

# numbers as Binance sends them: strings of decimals, and everything a broken sender might put there
numberish = (
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str)
    | st.sampled_from(
        [
            "",
            " ",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "Infinity",
            "1e400",
            "-0",
            "0",
            "1_0",
            "0x10",
            "١٢٣",
            "²",
            "1e-400",
            "--1",
            "\x00",
            "9" * 30,
        ]
    )
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.text(max_size=8)
    | st.lists(st.integers(), max_size=2)
)


def mutated(base: dict, keys: list[str], values: st.SearchStrategy = numberish) -> st.SearchStrategy[dict]:
    """`base` with some of `keys` replaced by odd values or dropped, and maybe an unknown key added."""
    return st.fixed_dictionaries(
        {
            "replace": st.dictionaries(st.sampled_from(keys), values, max_size=3),
            "drop": st.sets(st.sampled_from(keys), max_size=2),
        }
    ).map(lambda m: {k: v for k, v in {**base, **m["replace"]}.items() if k not in m["drop"]})


def floats_in(value) -> list[float]:
    """Every float inside a parsed value (dicts, lists, tuples, dataclasses), for "no nan/inf got through"."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in floats_in(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in floats_in(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [x for name in value.__dataclass_fields__ for x in floats_in(getattr(value, name))]
    return []
