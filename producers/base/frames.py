"""The error every venue's parser raises for a frame it cannot normalise.

The producer catches it, dead-letters the raw frame with the reason and keeps going; one class for
every venue lets the shared dispatch (`producers.base.venue`) handle them alike.
"""

from __future__ import annotations


class FrameError(ValueError):
    """A frame that cannot be normalised (missing field, wrong type, unknown event)."""
