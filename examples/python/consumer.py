"""A Python consumer of shop's events: pika + the classes generated from `proto/`.

It declares its own durable queue, binds it to the chosen routing keys on the `shop.events`
topic exchange, decodes each message by its AMQP `type` property into the generated class,
prints it as one JSON line on stdout (with message_id, correlation_id and trace id), and acks
only after handling. Its handling span continues the producer's trace (`traceparent` header).

    python consumer.py --queue analytics --keys 'order.*,user.created'

Delivery is at least once: a message can arrive again after a crash or reconnect, so a real
consumer de-duplicates on `message_id`. Messages of a type this build does not know (a newer
event) are acked and skipped; a body that does not decode is rejected without requeue and so
dead-lettered to `<queue>.dlq`, which this consumer declares. Logs go to stderr.
"""

import argparse
import json
import logging
import os
import signal
import sys

import pika
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

import shop_protos
import tracing_setup

log = logging.getLogger("shop-python-consumer")
CONTENT_TYPE = "application/x-protobuf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    p.add_argument("--exchange", default=os.environ.get("SHOP_EXCHANGE", "shop.events"))
    p.add_argument("--queue", default="python-consumer", help="durable queue owned by this consumer")
    p.add_argument("--keys", nargs="+", default=["#"], help="routing keys to bind (topic patterns; spaces or commas)")
    p.add_argument("--prefetch", type=int, default=50)
    p.add_argument("--list-events", action="store_true", help="print the known event types and their keys, then exit")
    return p.parse_args()


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
            "event": json_format.MessageToDict(event),
        }
        print(json.dumps(line), flush=True)
        channel.basic_ack(method.delivery_tag)


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    args = parse_args()
    args.keys = [k for key in args.keys for k in key.split(",") if k]
    if args.list_events:
        for type_name, key in sorted(shop_protos.routing_keys().items(), key=lambda kv: kv[1]):
            print(f"{key:30} {type_name}")
        return 0
    provider = tracing_setup.init("python-consumer")
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))

    connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(args.exchange, exchange_type="topic", durable=True)
        # What cannot be decoded is parked in <queue>.dlq for a person to look at, never dropped.
        dlq = f"{args.queue}.dlq"
        channel.queue_declare(dlq, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_declare(
            args.queue,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
        )
        for key in args.keys:
            channel.queue_bind(args.queue, args.exchange, routing_key=key)
        channel.basic_qos(prefetch_count=args.prefetch)
        channel.basic_consume(args.queue, Handler(args.exchange))
        log.info("ready: queue %s bound to %s with keys %s", args.queue, args.exchange, " ".join(args.keys))
        # Short waits so a signal stops the loop promptly between deliveries, never mid-ack.
        while not stopping:
            connection.process_data_events(time_limit=0.2)
        log.info("stopping: unacked deliveries go back to the queue")
    finally:
        if connection.is_open:
            connection.close()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
