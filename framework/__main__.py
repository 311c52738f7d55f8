"""``python -m framework ...``: the ``stageflow`` command."""

from framework.cli import main

main()
