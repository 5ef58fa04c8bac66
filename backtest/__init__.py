"""Backtests: history through the same engine core and execution model as the live pipeline."""
