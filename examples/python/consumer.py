"""A Python consumer of shop's events: pika + the classes generated from `proto/`.

It declares its own durable queue, binds it to the chosen routing keys on the `shop.events`
topic exchange, decodes each message by its AMQP `type` property into the generated class,
prints it as one JSON line on stdout (with message_id, correlation_id and trace id), and acks
only after handling. Its handling span continues the producer's trace (`traceparent` header).

    python consumer.py --queue analytics --keys 'order.*,user.created'
    python consumer.py --transient --keys 'order.*'   # a queue that goes away on exit

While the broker cannot be reached it says so and retries (1 s, doubling to 30 s) until
--connect-timeout; after a lost connection it reconnects the same way. It gives up at once when
the broker refuses the user, password or vhost. SIGINT (Ctrl-C) or SIGTERM stops it cleanly.

Delivery is at least once: a message can arrive again after a crash or reconnect, so a real
consumer de-duplicates on `message_id`. Messages of a type this build does not know (a newer
event) are acked and skipped; a body that does not decode is rejected without requeue and so
dead-lettered to `<queue>.dlq`, which this consumer declares (with --transient there is no
DLQ: such a message is logged and dropped). Logs go to stderr.
"""

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import time

import pika
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

import shop_protos
import tracing_setup

log = logging.getLogger("shop-python-consumer")
CLOUD_EVENTS_PREFIX = "cloudEvents:"
CONTENT_TYPE = "application/x-protobuf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--amqp-url",
        metavar="URL",
        default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        help="the broker; the path is the vhost, %%2f for / "
        "(default: $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/%%2f)",
    )
    p.add_argument(
        "--exchange",
        metavar="NAME",
        default=os.environ.get("SHOP_EXCHANGE", "shop.events"),
        help="the topic exchange shop publishes to (default: $SHOP_EXCHANGE, else shop.events)",
    )
    p.add_argument(
        "--queue",
        metavar="NAME",
        help="the queue to declare and consume (default: python-consumer; with --transient, a server-named one)",
    )
    p.add_argument(
        "--transient",
        action="store_true",
        help="declare an exclusive, auto-delete, non-durable queue and no DLQ, gone when the consumer exits "
        "(default: off: a durable quorum queue and <queue>.dlq, kept after exit)",
    )
    p.add_argument(
        "--keys",
        nargs="+",
        metavar="KEY",
        default=["#"],
        help="routing keys to bind (topic patterns; spaces or commas) (default: #)",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        metavar="N",
        default=50,
        help="unacked deliveries the broker may send ahead (default: %(default)s)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60,
        metavar="SECONDS",
        help="give up when the broker cannot be reached for this long, at start or after losing the connection; "
        "0 retries forever (default: %(default)g)",
    )
    p.add_argument(
        "--list-events",
        action="store_true",
        help="print the known event types and their keys, then exit (default: off)",
    )
    args = p.parse_args()
    if not re.match(r"amqps?://", args.amqp_url):
        p.error(f"--amqp-url must look like amqp://USER:PASSWORD@HOST:5672/VHOST, not {masked(args.amqp_url)}")
    if args.prefetch < 0 or args.connect_timeout < 0:
        p.error("--prefetch and --connect-timeout must not be negative")
    args.keys = [k for key in args.keys for k in key.split(",") if k]
    args.queue = args.queue or ("" if args.transient else "python-consumer")
    return args


def masked(url: str) -> str:
    """The URL with its password replaced by ***, fit for a log line."""
    return re.sub(r"^(\w+://[^:/@]*:)[^@/]*@", r"\1***@", url)


def reason(e: BaseException) -> str:
    """Why a connection failed, from the innermost cause: pika wraps it (ConnectionRefusedError in
    AMQPConnectorSocketConnectError in AMQPConnectionError), and the outermost prints empty."""
    while isinstance(inner := getattr(e, "exception", None) or next(iter(e.args), None), BaseException):
        e = inner
    if isinstance(e, pika.exceptions.ConnectionClosed):
        return f"{e.reply_code} {e.reply_text}"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


class GiveUp(Exception):
    """The consumer cannot go on; the message says why and what to do."""


def connect(args: argparse.Namespace, stopping: list) -> "pika.BlockingConnection | None":
    """A connection to the broker, retried with backoff (1 s doubling to 30 s) until
    --connect-timeout; None if a signal came first. Raises GiveUp when the broker refuses the
    credentials or the vhost (retrying does not help) or when the time is up."""
    url = masked(args.amqp_url)
    params = pika.URLParameters(args.amqp_url)
    params.client_properties = {"connection_name": "shop-python-consumer"}
    deadline = time.monotonic() + args.connect_timeout if args.connect_timeout > 0 else math.inf
    delay = 1.0
    while not stopping:
        try:
            return pika.BlockingConnection(params)
        except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError):
            raise GiveUp(
                f"{url} refused: authentication of user {params.credentials.username!r} failed: check the user and "
                "password in --amqp-url or $AMQP_URL (RabbitMQ's guest may log in from localhost only)"
            )
        except pika.exceptions.ProbableAccessDeniedError as e:
            raise GiveUp(
                f"{url} refused: access to vhost {params.virtual_host!r} ({reason(e)}): check the URL's path "
                "(%2f is /) and the user's permissions there (rabbitmqctl list_permissions -p VHOST)"
            )
        except (pika.exceptions.AMQPConnectionError, OSError) as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GiveUp(
                    f"gave up connecting to {url} ({reason(e)}) after --connect-timeout {args.connect_timeout:g} s: "
                    "start RabbitMQ (docker compose up -d rabbitmq) or fix --amqp-url / $AMQP_URL, then run again"
                )
            wait = min(delay, left)
            log.warning(
                "cannot connect to %s (%s): is RabbitMQ running there? Start it or fix --amqp-url / $AMQP_URL; "
                "retrying in %g s",
                url, reason(e), round(wait, 1),
            )
            end = time.monotonic() + wait
            while not stopping and time.monotonic() < end:
                time.sleep(0.1)  # short naps: a signal ends the wait promptly
            delay = min(delay * 2, 30.0)
    return None


def header_text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Handler:
    """Decodes, prints and acks one delivery at a time inside a consumer span."""

    def __init__(self, exchange: str):
        self.exchange = exchange
        self.tracer = trace.get_tracer("shop-python-consumer")

    def __call__(self, channel, method, properties, body: bytes) -> None:
        headers = {k: header_text(v) for k, v in (properties.headers or {}).items()}
        parent = tracing_setup.PROPAGATOR.extract(carrier=headers)
        with self.tracer.start_as_current_span(
            f"{method.routing_key} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": self.exchange,
                "messaging.rabbitmq.destination.routing_key": method.routing_key,
                "messaging.message.id": properties.message_id or "",
                "messaging.message.conversation_id": properties.correlation_id or "",
            },
        ) as span:
            self.handle(channel, method, properties, headers, body, span)

    def handle(self, channel, method, properties, headers, body, span) -> None:
        type_name = properties.type or ""
        cls = shop_protos.message_class(type_name)
        if cls is None:
            log.warning("skipping message %s of unknown type %r", properties.message_id, type_name)
            channel.basic_ack(method.delivery_tag)
            return
        if properties.content_type not in (None, CONTENT_TYPE):
            log.warning("message %s has content type %r", properties.message_id, properties.content_type)
        try:
            event = cls.FromString(body)
        except DecodeError as e:
            span.set_status(Status(StatusCode.ERROR, f"undecodable {type_name}: {e}"))
            log.error("rejecting message %s: body is not a %s (%s)", properties.message_id, type_name, e)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        line = {
            "consumer": "python",
            "routing_key": method.routing_key,
            "type": type_name,
            "message_id": properties.message_id,
            "correlation_id": properties.correlation_id,
            "causation_id": headers.get("x-causation-id"),
            "app_id": properties.app_id,
            "trace_id": tracing_setup.trace_id_hex(span),
            # CloudEvents 1.0, binary content mode: the context attributes are the headers with
            # the AMQP binding's `cloudEvents:` prefix (specversion, id, source, type, time,
            # subject); the body is the data, `content_type` its data content type.
            "cloud_events": {
                key[len(CLOUD_EVENTS_PREFIX):]: value
                for key, value in headers.items()
                if key.startswith(CLOUD_EVENTS_PREFIX)
            },
            "event": json_format.MessageToDict(event),
        }
        print(json.dumps(line), flush=True)
        channel.basic_ack(method.delivery_tag)


def consume(connection: pika.BlockingConnection, args: argparse.Namespace, stopping: list) -> None:
    """Declares the queue (and its DLQ), binds it and handles deliveries until a signal."""
    channel = connection.channel()
    channel.exchange_declare(args.exchange, exchange_type="topic", durable=True)
    if args.transient:
        # Deleted by the broker when this connection closes. Exclusive queues are classic, never
        # quorum; no DLQ either, which would outlive the queue: what cannot be decoded is dropped.
        declared = channel.queue_declare(
            args.queue, exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"}
        )
        queue = declared.method.queue
    else:
        # What cannot be decoded is parked in <queue>.dlq for a person to look at, never dropped.
        queue = args.queue
        dlq = f"{queue}.dlq"
        channel.queue_declare(dlq, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_declare(
            queue,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
        )
    for key in args.keys:
        channel.queue_bind(queue, args.exchange, routing_key=key)
    channel.basic_qos(prefetch_count=args.prefetch)
    channel.basic_consume(queue, Handler(args.exchange))
    kind = "transient queue" if args.transient else "queue"
    log.info("ready: %s %s bound to %s with keys %s", kind, queue, args.exchange, " ".join(args.keys))
    # Short waits so a signal stops the loop promptly between deliveries, never mid-ack.
    while not stopping:
        connection.process_data_events(time_limit=0.2)


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # its errors are reported here, once, as one line
    args = parse_args()
    if args.list_events:
        for type_name, key in sorted(shop_protos.routing_keys().items(), key=lambda kv: kv[1]):
            print(f"{key:30} {type_name}")
        return 0
    provider = tracing_setup.init("python-consumer")
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    try:
        while not stopping:
            connection = connect(args, stopping)
            if connection is None:
                break
            try:
                consume(connection, args, stopping)
            except pika.exceptions.AMQPConnectionError as e:
                log.warning("lost the connection to %s (%s): reconnecting; unacked deliveries will come again",
                            masked(args.amqp_url), reason(e))
            finally:
                if connection.is_open:
                    connection.close()
        log.info("stopping: unacked deliveries go back to the queue")
    except GiveUp as e:
        log.error("%s", e)
        return 1
    except pika.exceptions.ChannelClosedByBroker as e:  # a declaration it refused: a name in use, no permission
        log.error("the broker refused to set up the queue: %s %s", e.reply_code, e.reply_text)
        return 1
    finally:
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
