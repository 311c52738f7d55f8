"""deploy/docker-compose.yml, checked offline: RabbitMQ and PostgreSQL are not published to other machines, no
password is written in the file, and every variable it requires is one deploy/.env.example documents."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPOSE = (DEPLOY / "docker-compose.yml").read_text()
SERVICES = yaml.safe_load(COMPOSE)["services"]


def test_the_broker_and_the_database_are_not_published_beyond_this_machine() -> None:
    for name in ("rabbitmq", "postgres"):
        for port in SERVICES[name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
        assert not [p for p in SERVICES[name].get("ports", []) if str(p).split(":")[-1] in ("5672", "5432")]


def test_passwords_come_from_the_environment_and_are_required() -> None:
    assert SERVICES["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_PASSWORD:?")
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for url in re.findall(r"(?:amqp|postgresql)://[^\s]+", COMPOSE):
        assert re.match(r"\w+://\w+:\$\{\w+:\?", url), f"a URL with a written password: {url}"


def test_every_required_variable_is_documented_in_the_env_example() -> None:
    required = set(re.findall(r"\$\{(\w+):[?-]", COMPOSE))
    documented = set(re.findall(r"^(\w+)=", (DEPLOY / ".env.example").read_text(), re.M))
    assert required and required <= documented, sorted(required - documented)
