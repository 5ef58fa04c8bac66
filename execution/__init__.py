"""Execution: signals to orders through the paper broker (default) or an exchange broker."""
