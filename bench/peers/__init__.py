"""The systems ``make bench`` compares, one module each; :mod:`bench.peers.base` has what they share.

Celery and Dramatiq are imported only inside their modules' functions: they live in ``.bench-venv``
(``bench/requirements.txt``), never in the project's own dependencies.
"""

from __future__ import annotations

from bench.peers.base import Peer
from bench.peers.celery_pg import CeleryPg
from bench.peers.dramatiq_pg import DramatiqPg
from bench.peers.raw_amqp import RawAmqp, RawAmqpPg
from bench.peers.stageflow import StageflowPeer

PEERS: dict[str, type[Peer]] = {
    peer.name: peer for peer in (StageflowPeer, RawAmqp, RawAmqpPg, DramatiqPg, CeleryPg)
}
