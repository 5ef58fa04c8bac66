"""Research at machine speed: overfitting guards, labels, walk-forward windows and parameter search."""
