#!/usr/bin/env bash
# Make sure the local RabbitMQ and PostgreSQL that the tests and the benchmark use are up.
# Starts them if they are installed but stopped; says what to do if they are missing.
set -u

rabbit_up() { timeout 5 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null; }
pg_up() { timeout 5 bash -c '</dev/tcp/127.0.0.1/5432' 2>/dev/null; }

if ! rabbit_up; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ..."
    rabbitmq-server -detached
    for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
  fi
fi
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null; then
    echo "starting PostgreSQL..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
fi

status=0
rabbit_up || { echo "RabbitMQ is not reachable on 127.0.0.1:5672: install it (apt-get install rabbitmq-server) or set STAGEFLOW_TEST_BROKER_URL"; status=1; }
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432: install it (apt-get install postgresql) or set STAGEFLOW_TEST_STORE_URL"; status=1; }
if [ "$status" = 0 ] && command -v rabbitmqctl >/dev/null; then
  # The TCP port opens before RabbitMQ accepts AMQP connections; wait until it is fully booted.
  timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
exit $status
