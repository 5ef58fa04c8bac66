"""`python -m tapeflow` is the same as the `tapeflow` command (used by `up --detach`)."""

from tapeflow.cli import main

main()
