"""``python -m workers``: run one worker (same as ``stageflow worker``)."""

import sys

from framework.cli import main

main(["worker", *sys.argv[1:]])
