"""Faust stream apps and the pure engine core they drive (bars, features, signals)."""
