"""The systems ``make bench`` compares, one module each (listed in ``bench.harness.PEERS``);
:mod:`bench.peers.base` has what they share. This package imports none of them: each module is also
its workers' entry point (``python -m bench.peers.<name>``).

Celery and Dramatiq are imported only inside their modules' functions: they live in ``.bench-venv``
(``bench/requirements.txt``), never in the project's own dependencies.
"""

