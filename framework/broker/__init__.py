"""Message brokers: the contract and its implementations (RabbitMQ for production, in-memory embedded)."""

from framework.broker.base import INNER, PARKED, SERVICE, Broker, Consumer, Delivery, Outgoing, command_queue

__all__ = ["Broker", "Consumer", "Delivery", "Outgoing", "INNER", "SERVICE", "PARKED", "command_queue"]
