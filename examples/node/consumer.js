// A Node.js consumer of shop's events: amqplib + @bufbuild/protobuf code generated from proto/.
//
// It declares its own durable queue, binds it to the chosen routing keys on the `shop.events`
// topic exchange, decodes each message by its AMQP `type` property with the generated schema,
// prints it as one JSON line on stdout (with message_id, correlation_id and trace id), and acks
// only after handling. Its handling span continues the producer's trace (`traceparent` header).
//
//   node consumer.js --queue analytics --keys 'order.*,user.created'
//
// Delivery is at least once: a message can arrive again after a crash or reconnect, so a real
// consumer de-duplicates on `message_id`. Messages of a type this build does not know (a newer
// event) are acked and skipped; a body that does not decode is rejected without requeue and so
// dead-lettered to `<queue>.dlq`, which this consumer declares. Logs go to stderr.
import { parseArgs } from "node:util";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, propagation, trace } from "@opentelemetry/api";
import { fromBinary, toJson } from "@bufbuild/protobuf";
import amqp from "amqplib";
import { registry, routingKeys, schemaOf } from "./events.js";
import { initTracing } from "./tracing.js";

const CONTENT_TYPE = "application/x-protobuf";
const log = (level, message) =>
  process.stderr.write(`${new Date().toISOString()} ${level} shop-node-consumer: ${message}\n`);

const { values: args } = parseArgs({
  options: {
    "amqp-url": { type: "string", default: process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f" },
    exchange: { type: "string", default: process.env.SHOP_EXCHANGE || "shop.events" },
    queue: { type: "string", default: "node-consumer" },
    keys: { type: "string", multiple: true, default: ["#"] },
    prefetch: { type: "string", default: "50" },
    "list-events": { type: "boolean", default: false },
  },
  strict: true,
});
// `--keys a,b` or `--keys a --keys b`, as the Python consumer takes them.
const keys = args.keys.flatMap((k) => k.split(",")).filter(Boolean);

if (args["list-events"]) {
  for (const [typeName, key] of routingKeys().sort((a, b) => a[1].localeCompare(b[1]))) {
    console.log(`${key.padEnd(30)} ${typeName}`);
  }
  process.exit(0);
}

const headerText = (value) => (Buffer.isBuffer(value) ? value.toString("utf8") : String(value));

const provider = initTracing("node-consumer");
const tracer = trace.getTracer("shop-node-consumer");

/** Decodes, prints and acks one delivery inside a consumer span. */
function handle(channel, message) {
  const { fields, properties } = message;
  const headers = Object.fromEntries(
    Object.entries(properties.headers ?? {}).map(([k, v]) => [k, headerText(v)]),
  );
  const parent = propagation.extract(ROOT_CONTEXT, headers);
  const span = tracer.startSpan(
    `${fields.routingKey} process`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.destination.name": args.exchange,
        "messaging.rabbitmq.destination.routing_key": fields.routingKey,
        "messaging.message.id": properties.messageId ?? "",
        "messaging.message.conversation_id": properties.correlationId ?? "",
      },
    },
    parent,
  );
  try {
    const typeName = properties.type ?? "";
    const schema = schemaOf(typeName);
    if (!schema) {
      log("WARN", `skipping message ${properties.messageId} of unknown type ${JSON.stringify(typeName)}`);
      channel.ack(message);
      return;
    }
    if (properties.contentType && properties.contentType !== CONTENT_TYPE) {
      log("WARN", `message ${properties.messageId} has content type ${properties.contentType}`);
    }
    let event;
    try {
      event = fromBinary(schema, message.content);
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: `undecodable ${typeName}: ${e.message}` });
      log("ERROR", `rejecting message ${properties.messageId}: body is not a ${typeName} (${e.message})`);
      channel.reject(message, false);
      return;
    }
    const line = {
      consumer: "node",
      routing_key: fields.routingKey,
      type: typeName,
      message_id: properties.messageId,
      correlation_id: properties.correlationId,
      causation_id: headers["x-causation-id"] ?? null,
      app_id: properties.appId,
      trace_id: span.spanContext().traceId,
      event: toJson(schema, event, { registry }),
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
    channel.ack(message);
  } catch (e) {
    // A bug in handling, not in the message: park it rather than leave it unacked forever.
    span.setStatus({ code: SpanStatusCode.ERROR, message: String(e) });
    log("ERROR", `handling message ${properties.messageId} failed, dead-lettering it: ${e.stack ?? e}`);
    channel.reject(message, false);
  } finally {
    span.end();
  }
}

const connection = await amqp.connect(args["amqp-url"]);
const channel = await connection.createChannel();
await channel.assertExchange(args.exchange, "topic", { durable: true });
// What cannot be decoded is parked in <queue>.dlq for a person to look at, never dropped.
const dlq = `${args.queue}.dlq`;
await channel.assertQueue(dlq, { durable: true, arguments: { "x-queue-type": "quorum" } });
await channel.assertQueue(args.queue, {
  durable: true,
  arguments: { "x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq },
});
for (const key of keys) await channel.bindQueue(args.queue, args.exchange, key);
await channel.prefetch(Number(args.prefetch));
await channel.consume(args.queue, (message) => message && handle(channel, message), { noAck: false });
log("INFO", `ready: queue ${args.queue} bound to ${args.exchange} with keys ${keys.join(" ")}`);

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  log("INFO", `${signal}: stopping; unacked deliveries go back to the queue`);
  try {
    await channel.close();
    await connection.close();
  } finally {
    await provider.shutdown();
  }
  process.exit(0);
}
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));
connection.on("close", () => {
  if (!stopping) {
    log("ERROR", "the broker closed the connection; exiting so a supervisor restarts the consumer");
    provider.shutdown().finally(() => process.exit(1));
  }
});
