"""A small gRPC client of shop (grpcio + the stubs generated from `proto/`).

It creates a user, stocks a product and places an order, then waits for the saga to settle
the order and prints one JSON object: the ids, the final status and the trace id. All calls
run in one trace (W3C `traceparent` in the gRPC metadata) and share one `x-correlation-id`,
so every event of the flow carries both.

    python place_order.py                      # user 50051, order 50052, inventory 50053
    python place_order.py --tour               # also a rejected order, a cancellation and
                                               # a profile update: every event type once

CreateOrder answers FAILED_PRECONDITION until the order service has consumed the new user's
`user.created`; the script retries it (with the same idempotency key, so never twice).
"""

import argparse
import json
import os
import sys
import time
import uuid

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

import shop_protos  # noqa: F401  (puts the generated modules on sys.path)
import tracing_setup
from shop.inventory.v1 import inventory_service_pb2 as inventory
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.order.v1 import order_service_pb2 as order
from shop.order.v1 import order_service_pb2_grpc as order_grpc
from shop.user.v1 import user_service_pb2 as user
from shop.user.v1 import user_service_pb2_grpc as user_grpc

SETTLE_TIMEOUT_S = 30.0


def parse_args() -> argparse.Namespace:
    host = os.environ.get("SHOP_HOST", "localhost")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--user-addr", default=f"{host}:50051")
    p.add_argument("--order-addr", default=f"{host}:50052")
    p.add_argument("--inventory-addr", default=f"{host}:50053")
    p.add_argument("--product", default=f"widget-{uuid.uuid4().hex[:8]}")
    p.add_argument("--stock", type=int, default=10, help="units to add to the product's stock")
    p.add_argument("--quantity", type=int, default=2, help="units to order")
    p.add_argument("--tour", action="store_true", help="also reject an order, cancel one and rename the user")
    return p.parse_args()


class Shop:
    """Calls to the three command APIs, each in a client span carrying the flow's ids."""

    def __init__(self, args: argparse.Namespace, correlation_id: str):
        self.users = user_grpc.UserServiceStub(grpc.insecure_channel(args.user_addr))
        self.orders = order_grpc.OrderServiceStub(grpc.insecure_channel(args.order_addr))
        self.inventory = inventory_grpc.InventoryServiceStub(grpc.insecure_channel(args.inventory_addr))
        self.correlation_id = correlation_id
        self.tracer = trace.get_tracer("shop-python-client")

    def call(self, name: str, method, request):
        with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes={"rpc.system": "grpc"}):
            carrier = {}
            tracing_setup.PROPAGATOR.inject(carrier)
            metadata = [("x-correlation-id", self.correlation_id), *carrier.items()]
            return method(request, metadata=metadata, timeout=10)

    def create_order_when_customer_known(self, request) -> "order.Order":
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        wait = 0.05
        while True:
            try:
                return self.call("shop.order.v1.OrderService/CreateOrder", self.orders.CreateOrder, request).order
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                    raise
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def settled(self, order_id: str) -> "order.Order":
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        wait = 0.05
        while True:
            current = self.call(
                "shop.order.v1.OrderService/GetOrder", self.orders.GetOrder, order.GetOrderRequest(order_id=order_id)
            ).order
            if current.status != order.ORDER_STATUS_PENDING:
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} still PENDING after {SETTLE_TIMEOUT_S}s")
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def place(self, customer_id: str, product: str, quantity: int) -> dict:
        request = order.CreateOrderRequest(
            customer_id=customer_id,
            items=[order.LineItem(product_id=product, quantity=quantity, unit_price_cents=1999)],
            idempotency_key=str(uuid.uuid4()),
        )
        placed = self.create_order_when_customer_known(request)
        final = self.settled(placed.order_id)
        return {"order_id": final.order_id, "status": order.OrderStatus.Name(final.status), "reason": final.status_reason}


def main() -> int:
    args = parse_args()
    provider = tracing_setup.init("python-client")
    correlation_id = str(uuid.uuid4())
    shop = Shop(args, correlation_id)
    try:
        with trace.get_tracer("shop-python-client").start_as_current_span("place order") as root:
            created = shop.call(
                "shop.user.v1.UserService/CreateUser",
                shop.users.CreateUser,
                user.CreateUserRequest(
                    email=f"ada.{uuid.uuid4().hex[:12]}@example.com",
                    name="Ada Lovelace",
                    password="correct horse battery staple",
                ),
            ).user
            shop.call(
                "shop.inventory.v1.InventoryService/AdjustStock",
                shop.inventory.AdjustStock,
                inventory.AdjustStockRequest(product_id=args.product, delta=args.stock),
            )
            orders = [shop.place(created.user_id, args.product, args.quantity)]
            if args.tour:
                orders.append(shop.place(created.user_id, args.product, args.stock + 1))
                cancelled = shop.call(
                    "shop.order.v1.OrderService/CancelOrder",
                    shop.orders.CancelOrder,
                    order.CancelOrderRequest(order_id=orders[0]["order_id"], reason="changed my mind"),
                ).order
                orders[0]["status"] = order.OrderStatus.Name(cancelled.status)
                shop.call(
                    "shop.user.v1.UserService/UpdateUser",
                    shop.users.UpdateUser,
                    user.UpdateUserRequest(user_id=created.user_id, name="Ada King"),
                )
            result = {
                "trace_id": tracing_setup.trace_id_hex(root),
                "correlation_id": correlation_id,
                "user_id": created.user_id,
                "product_id": args.product,
                "orders": orders,
            }
    except grpc.RpcError as e:
        print(f"place_order.py: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        provider.shutdown()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
