"""``make bench``: Stageflow's throughput and latency on real RabbitMQ + PostgreSQL.

Not part of the installed package: run it from the repository root with ``python -m bench [--quick]``.
It starts real worker and services subprocesses, drives processes of the ``bench_flow`` case
(:mod:`bench.cases`) through them, reads the timings back from the store's history table
(:mod:`bench.measure`) and prints one JSON line on stdout. Progress goes to stderr.
"""
