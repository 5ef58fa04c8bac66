"""The research feature store and the detectors: a store is reused only for the same
detectors section, and a store written before the detector fields existed still reads (as missing)."""

from __future__ import annotations

import json

import numpy as np

from backtest.research.store import FeatureStore, StoreSpec
from stream_apps.core.detectors import DETECTOR_FIELDS
from stream_apps.core.frame import SCALAR_FIELDS

T0 = 1_700_006_400_000


def spec(detectors: str = "") -> StoreSpec:
    return StoreSpec("synthetic:1", ("BTCUSDT",), T0, T0 + 2 * 86_400_000, 1_800_000, 14_400_000, detectors)


def test_a_store_is_reused_only_for_the_same_detectors(tmp_path):
    FeatureStore.write_manifest(tmp_path, spec(), 10)
    assert "detectors" not in json.loads((tmp_path / "manifest.json").read_text())["spec"]  # as before them
    assert FeatureStore.matches(tmp_path, spec())
    assert not FeatureStore.matches(tmp_path, spec('{"bar":60000}'))
    FeatureStore.write_manifest(tmp_path, spec('{"bar":60000}'), 10)
    assert FeatureStore.matches(tmp_path, spec('{"bar":60000}'))
    assert not FeatureStore.matches(tmp_path, spec('{"bar":300000}')) and not FeatureStore.matches(tmp_path, spec())
    assert FeatureStore(tmp_path).spec == spec('{"bar":60000}')


def test_a_day_written_before_the_detector_fields_reads_them_as_missing(tmp_path):
    FeatureStore.write_manifest(tmp_path, spec(), 10)
    (tmp_path / "BTCUSDT").mkdir()
    times = T0 + 1000 * np.arange(1, 4)
    columns = {name: np.ones(3) for name in SCALAR_FIELDS if name not in DETECTOR_FIELDS}
    np.savez(tmp_path / "BTCUSDT" / "20231114.npz", time_ms=times, cvd_1800000=np.zeros(3), **columns)
    (frame,) = FeatureStore(tmp_path).frames("BTCUSDT")
    assert frame.time_ms.tolist() == times.tolist()
    assert all(np.isnan(frame.values[name]).all() for name in DETECTOR_FIELDS)
    assert frame.values["last_price"].tolist() == [1.0, 1.0, 1.0]
