"""`tapeflow labels`: the outcome labels of signals and closed trades (``review.labels``)."""

from __future__ import annotations
