"""``python -m scheduler.cli``: the ``latentfarm`` command (the worker supervisor starts its workers so)."""

from scheduler.cli import main

main()
