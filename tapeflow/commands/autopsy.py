"""`tapeflow autopsy`: why a closed trade made or lost what it did (``review.autopsy``)."""

from __future__ import annotations
