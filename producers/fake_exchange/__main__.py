"""``python -m producers.fake_exchange``: see :mod:`.cli`."""

from .cli import main

main()
