#!/usr/bin/env bash
# shop's RabbitMQ users: one per service, each allowed only its own queues and, on the topic
# exchange `shop.events`, only its own events. docs/deployment.md explains every pattern.
#
# Idempotent: creates what is missing and sets passwords, tags and permissions to what is
# written here, so running it again (docker-compose.yml runs it at every start of the broker)
# applies a changed password. The patterns assume AMQP_PREFIX is empty (production); the
# virtual host is what separates one deployment from another.
#
#   USER_AMQP_PASSWORD=… ORDER_AMQP_PASSWORD=… INVENTORY_AMQP_PASSWORD=… \
#   NOTIFICATION_AMQP_PASSWORD=… deploy/rabbitmq/init.sh
#
# Environment:
#   USER_AMQP_PASSWORD, ORDER_AMQP_PASSWORD, INVENTORY_AMQP_PASSWORD, NOTIFICATION_AMQP_PASSWORD
#                      the passwords of shop_user, shop_order, shop_inventory, shop_notification
#                      (required; URL-safe characters only, they go into AMQP_URL unescaped)
#   SHOP_AMQP_VHOST    the virtual host (default /); created when missing
#   RABBITMQCTL        the rabbitmqctl command (default rabbitmqctl), e.g.
#                      "docker compose exec -T rabbitmq rabbitmqctl"
#   SHOP_AMQP_WAIT_S   how long to wait for the node to finish booting (default 120)
#
# The passwords are passed to rabbitmqctl as arguments: run it where only the broker's
# operators can list processes (inside the broker's container in docker-compose.yml).
set -euo pipefail

vhost=${SHOP_AMQP_VHOST:-/}
read -r -a ctl <<<"${RABBITMQCTL:-rabbitmqctl}"
wait_s=${SHOP_AMQP_WAIT_S:-120}

say() { printf 'shop rabbitmq init: %s\n' "$*"; }
fail() { printf 'shop rabbitmq init: %s\n' "$*" >&2; exit 1; }

for var in USER_AMQP_PASSWORD ORDER_AMQP_PASSWORD INVENTORY_AMQP_PASSWORD NOTIFICATION_AMQP_PASSWORD; do
  value=${!var:-}
  [ -n "$value" ] || fail "$var is not set (docker compose reads it from .env)"
  [[ "$value" =~ ^[A-Za-z0-9._~-]+$ ]] ||
    fail "$var must be URL-safe (letters, digits, . _ ~ -): it goes into AMQP_URL as is; e.g. openssl rand -hex 24"
done

# The node may still be booting (docker-compose.yml starts this next to the broker).
deadline=$((SECONDS + wait_s))
until "${ctl[@]}" --quiet await_startup >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "the node did not come up within ${wait_s}s"
  sleep 2
done

if ! "${ctl[@]}" --silent list_vhosts name | grep -qxF -- "$vhost"; then
  say "creating virtual host $vhost"
  "${ctl[@]}" --quiet add_vhost "$vhost"
fi

existing_users=$("${ctl[@]}" --silent list_users | awk '{print $1}')

# user NAME PASSWORD: creates the user or sets its password; no tags (no management UI access).
user() {
  if grep -qxF -- "$1" <<<"$existing_users"; then
    "${ctl[@]}" --quiet change_password "$1" "$2"
  else
    say "creating user $1"
    "${ctl[@]}" --quiet add_user "$1" "$2"
  fi
  "${ctl[@]}" --quiet set_user_tags "$1"
}

# grant NAME CONFIGURE WRITE READ: the user's permissions on the virtual host (regular
# expressions over exchange and queue names; the default exchange is `amq.default`).
grant() {
  "${ctl[@]}" --quiet set_permissions -p "$vhost" "$1" "$2" "$3" "$4"
}

# topic NAME WRITE READ: routing keys the user may publish to shop.events (WRITE) and binding
# keys it may bind a queue with (READ).
topic() {
  "${ctl[@]}" --quiet set_topic_permissions -p "$vhost" "$1" shop.events "$2" "$3"
}

user shop_user "$USER_AMQP_PASSWORD"
user shop_order "$ORDER_AMQP_PASSWORD"
user shop_inventory "$INVENTORY_AMQP_PASSWORD"
user shop_notification "$NOTIFICATION_AMQP_PASSWORD"

# The user service only publishes: it declares the exchange and publishes user.* to it.
grant shop_user \
  '^shop\.events$' \
  '^shop\.events$' \
  '^$'
topic shop_user '^user\.' '^$'

# A consuming service: the exchange and its own queues <svc>, <svc>.retry.<ms>ms, <svc>.dlq.
#   configure  declare the exchange and its own queues
#   write      publish its events to shop.events; publish retry and DLQ copies through the
#              default exchange (amq.default), which also names the dead-letter exchange of
#              <svc> and the retry queues; bind its queue (write on the queue)
#   read       bind its queue to shop.events (read on the exchange); consume its queue; read
#              on a queue is also checked when it is declared with a dead-letter exchange
grant shop_order \
  '^(shop\.events|order(\.retry\.[0-9]+ms|\.dlq)?)$' \
  '^(shop\.events|amq\.default|order(\.retry\.[0-9]+ms|\.dlq)?)$' \
  '^(shop\.events|order(\.retry\.[0-9]+ms|\.dlq)?)$'
# It binds its queue to user.*, inventory.* and its own scheduled order.reservation_deadline.
topic shop_order '^order\.' '^(user\.|inventory\.|order\.reservation_deadline$)'

grant shop_inventory \
  '^(shop\.events|inventory(\.retry\.[0-9]+ms|\.dlq)?)$' \
  '^(shop\.events|amq\.default|inventory(\.retry\.[0-9]+ms|\.dlq)?)$' \
  '^(shop\.events|inventory(\.retry\.[0-9]+ms|\.dlq)?)$'
topic shop_inventory '^inventory\.' '^order\.'

# The notification service publishes no events: no write on shop.events.
grant shop_notification \
  '^(shop\.events|notification(\.retry\.[0-9]+ms|\.dlq)?)$' \
  '^(amq\.default|notification(\.retry\.[0-9]+ms|\.dlq)?)$' \
  '^(shop\.events|notification(\.retry\.[0-9]+ms|\.dlq)?)$'
topic shop_notification '^$' '^(user|order)\.'

say "users and permissions on virtual host $vhost:"
"${ctl[@]}" --quiet list_permissions -p "$vhost"
"${ctl[@]}" --quiet list_topic_permissions -p "$vhost"
