"""Shared fixtures and fakes of the test suite: one package, imported as `tests.support.<module>`."""
