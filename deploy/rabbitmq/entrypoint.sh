#!/usr/bin/env bash
# The rabbitmq container's entrypoint in docker-compose.yml: the image's own entrypoint runs the
# broker in the foreground, while deploy/rabbitmq/init.sh runs beside it, waits for the node,
# and creates shop's users. The health check passes only once init.sh has succeeded (it
# touches the ready file), so no service connects before its user exists; if init.sh fails,
# the broker is stopped, so the failure shows up as an exited container with the reason in
# its log.
#
# init.sh runs as the rabbitmq user: the Erlang cookie it uses is then always the broker's,
# even when it starts before the broker has written one.
set -euo pipefail

ready=/tmp/shop-rabbitmq-init.ready
rm -f "$ready"
(
  if gosu rabbitmq bash "$(dirname "$0")/init.sh"; then
    touch "$ready"
  else
    echo "shop: deploy/rabbitmq/init.sh failed, stopping the broker" >&2
    kill -TERM 1
  fi
) &
exec docker-entrypoint.sh "$@"
