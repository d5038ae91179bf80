#!/usr/bin/env bash
# A three-node RabbitMQ cluster of the installed server on this machine, for the cluster tests.
#
#   tests/cluster/rabbitmq-cluster.sh start    start three nodes, join them, print their URLs
#   tests/cluster/rabbitmq-cluster.sh status   the cluster's members and running nodes
#   tests/cluster/rabbitmq-cluster.sh stop     stop the nodes and remove their data
#   tests/cluster/rabbitmq-cluster.sh urls     the AMQP_URL of the three nodes
#
# Nodes shop-c1@localhost, shop-c2@localhost and shop-c3@localhost listen for AMQP on 5681-5683
# (inter-node 25681-25683), each with its own config, data and log directory under
# $SHOP_CLUSTER_DIR (default /tmp/shop-rabbitmq-cluster), and the server's one Erlang cookie
# (the rabbitmq user's), so they can join. Sized for a 2-core machine: one scheduler each and
# no busy waiting. It never touches the machine's own broker (rabbit@localhost on 5672).
# Quorum queues' leaders are spread over the nodes by a policy (queue-leader-locator balanced).
set -euo pipefail

dir=${SHOP_CLUSTER_DIR:-/tmp/shop-rabbitmq-cluster}
nodes=(shop-c1 shop-c2 shop-c3)
port() { echo $((5680 + $1)); }

ctl() { local node=$1; shift; rabbitmqctl -q -n "$node@localhost" "$@"; }

start_node() { # start_node <i>
  local i=$1 name=${nodes[$(($1 - 1))]} base="$dir/${nodes[$(($1 - 1))]}"
  mkdir -p "$base/data" "$base/log"
  printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users = none\n' "$(port "$i")" > "$base/rabbitmq.conf"
  echo '[].' > "$base/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$dir" 2>/dev/null || true
  RABBITMQ_NODENAME="$name@localhost" RABBITMQ_NODE_PORT="$(port "$i")" \
    RABBITMQ_DIST_PORT=$((25680 + i)) RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$base/data" RABBITMQ_LOG_BASE="$base/log" \
    RABBITMQ_PID_FILE="$base/pid" RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
    RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD=none \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none" \
    rabbitmq-server -detached >/dev/null 2>&1
}

wait_node() { # wait_node <name>
  for _ in $(seq 90); do
    ctl "$1" await_startup >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "rabbitmq-cluster: $1@localhost did not start (see $dir/$1/log)" >&2
  return 1
}

urls() {
  local list=()
  for i in 1 2 3; do list+=("amqp://guest:guest@127.0.0.1:$(port "$i")/%2f"); done
  (IFS=,; echo "${list[*]}")
}

running() { ctl "$1" status >/dev/null 2>&1; }

case "${1:-}" in
  start)
    # Idempotent: a node already running is left alone (a node killed since comes back with its
    # data and rejoins the cluster it belongs to).
    for i in 1 2 3; do running "${nodes[$((i - 1))]}" || start_node "$i"; done
    for node in "${nodes[@]}"; do wait_node "$node"; done
    for node in shop-c2 shop-c3; do
      if ! ctl "$node" cluster_status 2>/dev/null | grep -q "shop-c1@localhost"; then
        ctl "$node" stop_app
        ctl "$node" join_cluster shop-c1@localhost
        ctl "$node" start_app
      fi
    done
    ctl shop-c1 set_policy shop-balance '.*' '{"queue-leader-locator":"balanced"}' --apply-to queues >/dev/null
    echo "AMQP_URL=$(urls)"
    ;;
  stop)
    for node in "${nodes[@]}"; do ctl "$node" stop >/dev/null 2>&1 || true; done
    rm -rf "$dir"
    echo "rabbitmq-cluster: stopped"
    ;;
  status)
    ctl shop-c1 cluster_status
    ;;
  urls)
    urls
    ;;
  *)
    echo "usage: $0 start|stop|status|urls" >&2
    exit 2
    ;;
esac
