#!/usr/bin/env bash
# A private RabbitMQ with its AMQP 1.0 plugin, for the router tests and bench.
#   scripts/rabbitmq.sh start   start it (installs Debian's rabbitmq-server when missing); prints
#                               export lines: eval "$(scripts/rabbitmq.sh start)"
#   scripts/rabbitmq.sh stop    stop it and its epmd
#   scripts/rabbitmq.sh status  exit 0 when it answers
# Environment (defaults chosen not to collide with a system RabbitMQ or other users):
#   RABBIT_PORT       AMQP port on 127.0.0.1 (default 25674; 0-9-1 and 1.0 share it)
#   RABBIT_NODE       Erlang node name (default iofogd-amqp-<port>@localhost)
#   RABBIT_DIR        state folder (default /tmp/iofogd-rabbitmq-<port>)
# The broker runs as the `rabbitmq` user (the Debian wrapper switches to it), so this needs root.
# SASL PLAIN guest/guest (loopback_users = none) and ANONYMOUS both work; a bare address
# (a queue name such as a microservice uuid) works for senders and receivers.
set -euo pipefail
RABBIT_PORT=${RABBIT_PORT:-25674}
RABBIT_NODE=${RABBIT_NODE:-iofogd-amqp-$RABBIT_PORT@localhost}
RABBIT_DIR=${RABBIT_DIR:-/tmp/iofogd-rabbitmq-$RABBIT_PORT}
# Private distribution and epmd ports, derived from the AMQP port.
DIST_PORT=$((RABBIT_PORT + 10000))
EPMD_PORT=$((RABBIT_PORT + 10001))

export RABBITMQ_NODENAME=$RABBIT_NODE
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$RABBIT_PORT
export RABBITMQ_DIST_PORT=$DIST_PORT
export ERL_EPMD_PORT=$EPMD_PORT
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia
export RABBITMQ_LOG_BASE=$RABBIT_DIR/log
export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins
export RABBITMQ_CONFIG_FILE=$RABBIT_DIR/rabbitmq.conf
export RABBITMQ_PID_FILE=$RABBIT_DIR/rabbit.pid

die() { echo "rabbitmq.sh: $*" >&2; exit 1; }

ctl() { rabbitmqctl -n "$RABBIT_NODE" "$@"; }

epmd_pids() {
    # Our epmd only: the one whose environment names our private epmd port.
    local pid
    for pid in $(pgrep -x epmd || true); do
        if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "ERL_EPMD_PORT=$EPMD_PORT"; then
            echo "$pid"
        fi
    done
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root (the broker runs as the rabbitmq user)"
    if ! command -v rabbitmq-server > /dev/null; then
        echo "rabbitmq.sh: installing rabbitmq-server" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server > /dev/null
    fi
    if ctl status > /dev/null 2>&1; then
        echo "rabbitmq.sh: already running on 127.0.0.1:$RABBIT_PORT" >&2
    else
        mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_DIR/log"
        echo "[rabbitmq_amqp1_0]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
        cat > "$RABBITMQ_CONFIG_FILE" <<CONF
loopback_users = none
listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
amqp1_0.default_user = guest
log.console = false
log.file.level = warning
CONF
        chown -R rabbitmq: "$RABBIT_DIR"
        rabbitmq-server -detached > "$RABBIT_DIR/log/start.out" 2>&1 || die "rabbitmq-server failed: $(cat "$RABBIT_DIR/log/start.out")"
        local i
        for i in $(seq 1 120); do
            if ctl await_startup --timeout 5 > /dev/null 2>&1; then
                break
            fi
            if [ "$i" = 60 ]; then
                tail -n 20 "$RABBIT_DIR/log/"*.log >&2 2> /dev/null || true
                die "did not start within 5 minutes; see $RABBIT_DIR/log"
            fi
            sleep 0.5
        done
    fi
    echo "export RABBIT_URL=amqp://guest:guest@127.0.0.1:$RABBIT_PORT"
    echo "export RABBIT_PORT=$RABBIT_PORT"
    echo "export RABBIT_NODE=$RABBIT_NODE"
}

stop() {
    ctl stop > /dev/null 2>&1 || true
    # A node that did not answer rabbitmqctl: end it by its pid file.
    local pid
    pid=$(cat "$RABBITMQ_PID_FILE" 2> /dev/null || true)  # rabbitmqctl stop may have removed it
    if [ -n "$pid" ]; then
        if kill -0 "$pid" 2> /dev/null; then
            kill "$pid" 2> /dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
        fi
        rm -f "$RABBITMQ_PID_FILE"
    fi
    for pid in $(epmd_pids); do
        kill "$pid" 2> /dev/null || true
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) ctl status > /dev/null 2>&1 ;;
    *) die "usage: $0 start|stop|status" ;;
esac
