"""Order endpoints of the fake Binance USD-M exchange (an in-memory account; see `routes` and `engine`)."""

from .engine import AccountEngine, OrderError
from .routes import (
    TEST_API_KEY,
    TEST_API_SECRET,
    VENUE_KEY,
    OrderVenue,
    add_order_routes,
)

__all__ = [
    "TEST_API_KEY",
    "TEST_API_SECRET",
    "VENUE_KEY",
    "AccountEngine",
    "OrderError",
    "OrderVenue",
    "add_order_routes",
]
