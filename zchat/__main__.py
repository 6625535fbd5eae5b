"""``python -m zchat`` is the ``zchat`` command."""

from zchat.cli import main

main()
