"""``python -m fake_exchange``: see :mod:`.cli`."""

from .cli import main

main()
