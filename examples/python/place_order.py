"""A small gRPC client of shop (grpcio + the stubs generated from `proto/`).

It creates a user, logs in as that user, stocks a product (logged in as staff) and places
an order, then waits for the saga to settle the order and prints one JSON object: the ids, the
final status and the trace id. All calls run in one trace (W3C `traceparent` in the gRPC
metadata) and share one `x-correlation-id`, so every event of the flow carries both.

    python place_order.py                      # user 50051, order 50052, inventory 50053
    python place_order.py --tour               # also a rejected order, a cancellation and
                                               # a profile update: every event type once

Every call but CreateUser and Login carries `authorization: Bearer <access_token>` from Login:
the new user's token for the order calls and UpdateUser, a staff token for AdjustStock (staff
only). The staff account is the one the user service creates from SHOP_ADMIN_EMAIL and
SHOP_ADMIN_PASSWORD, which are also the defaults of --staff-email and --staff-password.
Tokens and passwords are never printed.

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
    addr = "gRPC address (default: %(default)s; $SHOP_HOST sets the host)"
    p.add_argument("--user-addr", metavar="HOST:PORT", default=f"{host}:50051", help=f"the user service's {addr}")
    p.add_argument("--order-addr", metavar="HOST:PORT", default=f"{host}:50052", help=f"the order service's {addr}")
    p.add_argument(
        "--inventory-addr", metavar="HOST:PORT", default=f"{host}:50053", help=f"the inventory service's {addr}"
    )
    p.add_argument(
        "--product",
        metavar="ID",
        default=f"widget-{uuid.uuid4().hex[:8]}",
        help="the product id to stock and order (default: a new one, widget-<8 random hex digits>)",
    )
    p.add_argument(
        "--stock", type=int, metavar="N", default=10, help="units to add to the product's stock (default: %(default)s)"
    )
    p.add_argument("--quantity", type=int, metavar="N", default=2, help="units to order (default: %(default)s)")
    p.add_argument(
        "--tour",
        action="store_true",
        help="also reject an order, cancel one and rename the user: every event type once (default: off)",
    )
    p.add_argument(
        "--staff-email",
        metavar="EMAIL",
        default=os.environ.get("SHOP_ADMIN_EMAIL"),
        help="staff account that stocks the product (AdjustStock is staff only) (default: $SHOP_ADMIN_EMAIL)",
    )
    p.add_argument(
        "--staff-password",
        metavar="PASSWORD",
        default=os.environ.get("SHOP_ADMIN_PASSWORD"),
        help="its password; prefer the variable, arguments show in `ps` (default: $SHOP_ADMIN_PASSWORD)",
    )
    args = p.parse_args()
    if not args.staff_email or not args.staff_password:
        p.error(
            "AdjustStock needs a staff login: set SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD (the staff account "
            "the user service was started with) or pass --staff-email and --staff-password"
        )
    return args


class Shop:
    """Calls to the three command APIs, each in a client span carrying the flow's ids."""

    def __init__(self, args: argparse.Namespace, correlation_id: str):
        self.users = user_grpc.UserServiceStub(grpc.insecure_channel(args.user_addr))
        self.orders = order_grpc.OrderServiceStub(grpc.insecure_channel(args.order_addr))
        self.inventory = inventory_grpc.InventoryServiceStub(grpc.insecure_channel(args.inventory_addr))
        self.correlation_id = correlation_id
        self.tracer = trace.get_tracer("shop-python-client")

    def call(self, name: str, method, request, token: "str | None" = None):
        """One RPC in a client span; `token` (from Login) goes in the `authorization` metadata."""
        with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes={"rpc.system": "grpc"}):
            carrier = {}
            tracing_setup.PROPAGATOR.inject(carrier)
            metadata = [("x-correlation-id", self.correlation_id), *carrier.items()]
            if token is not None:
                metadata.append(("authorization", f"Bearer {token}"))
            return method(request, metadata=metadata, timeout=10)

    def login(self, email: str, password: str) -> str:
        """The access token of the account; kept in memory only, never printed."""
        response = self.call(
            "shop.user.v1.UserService/Login", self.users.Login, user.LoginRequest(email=email, password=password)
        )
        return response.access_token

    def create_order_when_customer_known(self, request, token: str) -> "order.Order":
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        wait = 0.05
        while True:
            try:
                placed = self.call("shop.order.v1.OrderService/CreateOrder", self.orders.CreateOrder, request, token)
                return placed.order
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                    raise
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def get(self, order_id: str, token: str) -> "order.Order":
        """The order as the order service stored it."""
        return self.call(
            "shop.order.v1.OrderService/GetOrder", self.orders.GetOrder, order.GetOrderRequest(order_id=order_id), token
        ).order

    def settled(self, order_id: str, token: str) -> "order.Order":
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        wait = 0.05
        while True:
            current = self.get(order_id, token)
            if current.status != order.ORDER_STATUS_PENDING:
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} still PENDING after {SETTLE_TIMEOUT_S}s")
            time.sleep(wait)
            wait = min(wait * 2, 0.5)

    def place(self, customer_id: str, product: str, quantity: int, token: str) -> dict:
        request = order.CreateOrderRequest(
            customer_id=customer_id,
            items=[order.LineItem(product_id=product, quantity=quantity, unit_price_cents=1999)],
            idempotency_key=str(uuid.uuid4()),
        )
        placed = self.create_order_when_customer_known(request, token)
        return summary(self.settled(placed.order_id, token))


def summary(o: "order.Order") -> dict:
    return {"order_id": o.order_id, "status": order.OrderStatus.Name(o.status), "reason": o.status_reason}


def main() -> int:
    args = parse_args()
    provider = tracing_setup.init("python-client")
    correlation_id = str(uuid.uuid4())
    shop = Shop(args, correlation_id)
    step = "create the user"
    try:
        with trace.get_tracer("shop-python-client").start_as_current_span("place order") as root:
            email, password = f"ada.{uuid.uuid4().hex[:12]}@example.com", "correct horse battery staple"
            created = shop.call(
                "shop.user.v1.UserService/CreateUser",
                shop.users.CreateUser,
                user.CreateUserRequest(email=email, name="Ada Lovelace", password=password),
            ).user
            step = "log in as the new user"
            customer = shop.login(email, password)
            step = "log in as staff (check --staff-email/--staff-password or SHOP_ADMIN_EMAIL/SHOP_ADMIN_PASSWORD)"
            staff = shop.login(args.staff_email, args.staff_password)
            step = "stock the product as staff"
            shop.call(
                "shop.inventory.v1.InventoryService/AdjustStock",
                shop.inventory.AdjustStock,
                inventory.AdjustStockRequest(product_id=args.product, delta=args.stock),
                staff,
            )
            step = "place the order"
            orders = [shop.place(created.user_id, args.product, args.quantity, customer)]
            if args.tour:
                step = "place the order to be rejected"
                orders.append(shop.place(created.user_id, args.product, args.stock + 1, customer))
                step = "cancel the first order"
                first = orders[0]["order_id"]
                shop.call(
                    "shop.order.v1.OrderService/CancelOrder",
                    shop.orders.CancelOrder,
                    order.CancelOrderRequest(order_id=first, reason="changed my mind"),
                    customer,
                )
                # Printed as stored: the reason is the order's `status_reason` (the request's
                # `reason`, trimmed; "cancelled by request" if empty). CancelOrder commits before
                # it answers and CANCELLED is final, so one read shows it, with no waiting.
                step = "read the cancelled order"
                orders[0] = summary(shop.get(first, customer))
                step = "rename the user"
                shop.call(
                    "shop.user.v1.UserService/UpdateUser",
                    shop.users.UpdateUser,
                    user.UpdateUserRequest(user_id=created.user_id, name="Ada King"),
                    customer,
                )
            result = {
                "trace_id": tracing_setup.trace_id_hex(root),
                "correlation_id": correlation_id,
                "user_id": created.user_id,
                "product_id": args.product,
                "orders": orders,
            }
    except grpc.RpcError as e:
        print(f"place_order.py: could not {step}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        provider.shutdown()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
