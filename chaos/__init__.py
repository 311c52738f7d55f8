"""``make chaos``: Stageflow's fault suite on one machine, against the real RabbitMQ and PostgreSQL.

Not part of the installed package: run it from the repository root with ``python -m chaos [--quick]``.
Nine scenarios (:mod:`chaos.scenarios`), each on a fresh PostgreSQL schema and RabbitMQ queue prefix with
its own worker and services subprocesses: random worker SIGKILLs, a RabbitMQ and a PostgreSQL restart, a
frozen (SIGSTOPped) worker, duplicated/reordered/stale messages, poison messages, malformed or
tampered messages, an attacker on the broker and the gateway (``hostile``, :mod:`chaos.hostile`), and, on
servers they start for themselves, a killed RabbitMQ cluster node and a PostgreSQL failover
(``broker-node-kill``, ``pg-failover``, :mod:`chaos.cluster`).
The verdict comes from witnesses outside the framework (``tests/support/ledger.py``:
a trigger that records every UPDATE of a process row, and a service that writes one row per applied
effect). It prints a table (one row per scenario) and, last, one JSON line with the totals; it exits
non-zero if anything was lost or applied twice, or a scenario's own expectation failed.

It restarts the local RabbitMQ and PostgreSQL (scenario ``restarts``): do not run it beside other users
of those servers. ``tests/test_chaos.py`` runs the first seven with small numbers inside ``make test``.
"""
