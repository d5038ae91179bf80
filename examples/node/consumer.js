// A Node.js consumer of shop's events: amqplib + @bufbuild/protobuf code generated from proto/.
//
// It declares its own durable queue, binds it to the chosen routing keys on the `shop.events`
// topic exchange, decodes each message by its AMQP `type` property with the generated schema,
// prints it as one JSON line on stdout (with message_id, correlation_id and trace id), and acks
// only after handling. Its handling span continues the producer's trace (`traceparent` header).
//
//   node consumer.js --queue analytics --keys 'order.*,user.created'
//   node consumer.js --transient --keys 'order.*'   # a queue that goes away on exit
//
// While the broker cannot be reached it says so and retries (1 s, doubling to 30 s) until
// --connect-timeout; after a lost connection it reconnects the same way. It gives up at once when
// the broker refuses the user, password or vhost. SIGINT (Ctrl-C) or SIGTERM stops it cleanly.
//
// Delivery is at least once: a message can arrive again after a crash or reconnect, so a real
// consumer de-duplicates on `message_id`. Messages of a type this build does not know (a newer
// event) are acked and skipped; a body that does not decode is rejected without requeue and so
// dead-lettered to `<queue>.dlq`, which this consumer declares (with --transient there is no
// DLQ: such a message is logged and dropped). Logs go to stderr.
import { parseArgs } from "node:util";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, propagation, trace } from "@opentelemetry/api";
import { fromBinary, toJson } from "@bufbuild/protobuf";
import amqp from "amqplib";
import { registry, routingKeys, schemaOf } from "./events.js";
import { initTracing } from "./tracing.js";

const CONTENT_TYPE = "application/x-protobuf";
const log = (level, message) =>
  process.stderr.write(`${new Date().toISOString()} ${level} shop-node-consumer: ${message}\n`);

const USAGE = `usage: node consumer.js [options]

A Node.js consumer of shop's events: amqplib + @bufbuild/protobuf code generated from proto/.

options:
  --amqp-url URL             the broker; the path is the vhost, %2f for /
                             (default: $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/%2f)
  --exchange NAME            the topic exchange shop publishes to
                             (default: $SHOP_EXCHANGE, else shop.events)
  --queue NAME               the queue to declare and consume
                             (default: node-consumer; with --transient, a server-named one)
  --transient                declare an exclusive, auto-delete, non-durable queue and no DLQ, gone
                             when the consumer exits (default: off: a durable quorum queue and
                             <queue>.dlq, kept after exit)
  --keys KEY                 routing keys to bind (topic patterns; repeat or use commas) (default: #)
  --prefetch N               unacked deliveries the broker may send ahead (default: 50)
  --connect-timeout SECONDS  give up when the broker cannot be reached for this long, at start or
                             after losing the connection; 0 retries forever (default: 60)
  --list-events              print the known event types and their keys, then exit (default: off)
  -h, --help                 show this help and exit
`;

function usageError(message) {
  process.stderr.write(`consumer.js: ${message}\nrun \`node consumer.js --help\` for the options\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      "amqp-url": { type: "string", default: process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f" },
      exchange: { type: "string", default: process.env.SHOP_EXCHANGE || "shop.events" },
      queue: { type: "string" },
      transient: { type: "boolean", default: false },
      keys: { type: "string", multiple: true, default: ["#"] },
      prefetch: { type: "string", default: "50" },
      "connect-timeout": { type: "string", default: "60" },
      "list-events": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  }));
} catch (e) {
  usageError(e.message);
}
if (args.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
// The URL with its password replaced by ***, fit for a log line.
const masked = (url) => url.replace(/^(\w+:\/\/[^:/@]*:)[^@/]*@/, "$1***@");
const where = masked(args["amqp-url"]);
if (!/^amqps?:\/\//.test(args["amqp-url"])) {
  usageError(`--amqp-url must look like amqp://USER:PASSWORD@HOST:5672/VHOST, not ${where}`);
}
const prefetch = Number(args.prefetch);
const connectTimeout = Number(args["connect-timeout"]);
if (!Number.isInteger(prefetch) || prefetch < 0) usageError(`--prefetch must be a whole number, not ${args.prefetch}`);
if (!(connectTimeout >= 0)) usageError(`--connect-timeout must be seconds, not ${args["connect-timeout"]}`);
const queueName = args.queue ?? (args.transient ? "" : "node-consumer");
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
    log("ERROR", `handling message ${properties.messageId} failed, rejecting it: ${e.stack ?? e}`);
    channel.reject(message, false);
  } finally {
    span.end();
  }
}

/** The consumer cannot go on; the message says why and what to do. */
class GiveUp extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A connection to the broker, retried with backoff (1 s doubling to 30 s) until
 * --connect-timeout. Throws GiveUp when the broker refuses the credentials or the vhost
 * (retrying does not help) or when the time is up. */
async function connect() {
  const deadline = connectTimeout > 0 ? Date.now() + connectTimeout * 1000 : Infinity;
  for (let delay = 1000; ; delay = Math.min(delay * 2, 30000)) {
    try {
      return await amqp.connect(args["amqp-url"], { clientProperties: { connection_name: "shop-node-consumer" } });
    } catch (e) {
      if (/ACCESS.REFUSED/.test(e.message)) {
        throw new GiveUp(
          `${where} refused: authentication failed: check the user and password in --amqp-url or $AMQP_URL ` +
            "(RabbitMQ's guest may log in from localhost only)",
        );
      }
      if (/Expected ConnectionOpenOk/.test(e.message)) {
        throw new GiveUp(
          `${where} refused: access to the vhost: check the URL's path (%2f is /) and the user's ` +
            "permissions there (rabbitmqctl list_permissions -p VHOST)",
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new GiveUp(
          `gave up connecting to ${where} (${e.message}) after --connect-timeout ${connectTimeout} s: ` +
            "start RabbitMQ (docker compose up -d rabbitmq) or fix --amqp-url / $AMQP_URL, then run again",
        );
      }
      const wait = Math.min(delay, left);
      log(
        "WARN",
        `cannot connect to ${where} (${e.message}): is RabbitMQ running there? Start it or fix ` +
          `--amqp-url / $AMQP_URL; retrying in ${Math.round(wait / 100) / 10} s`,
      );
      await sleep(wait);
    }
  }
}

let connection = null; // the open connection, if any
let stopping = false;

/** Connects, declares the queue (and its DLQ), binds it and consumes; again after a lost connection. */
async function start() {
  const current = await connect();
  connection = current;
  current.on("error", () => {}); // 'close' follows with the error; unheard, 'error' would crash
  const channel = await current.createChannel();
  // A channel the broker closes (a declaration it refused) also fails the call that caused it:
  // reported there. Without a listener the 'error' event would crash the process.
  channel.on("error", () => {});
  await channel.assertExchange(args.exchange, "topic", { durable: true });
  let queue;
  if (args.transient) {
    // Deleted by the broker when this connection closes. Exclusive queues are classic, never
    // quorum; no DLQ either, which would outlive the queue: what cannot be decoded is dropped.
    ({ queue } = await channel.assertQueue(queueName, {
      exclusive: true,
      autoDelete: true,
      durable: false,
      arguments: { "x-queue-type": "classic" },
    }));
  } else {
    // What cannot be decoded is parked in <queue>.dlq for a person to look at, never dropped.
    queue = queueName;
    const dlq = `${queue}.dlq`;
    await channel.assertQueue(dlq, { durable: true, arguments: { "x-queue-type": "quorum" } });
    await channel.assertQueue(queue, {
      durable: true,
      arguments: { "x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq },
    });
  }
  for (const key of keys) await channel.bindQueue(queue, args.exchange, key);
  await channel.prefetch(prefetch);
  await channel.consume(queue, (message) => message && handle(channel, message), { noAck: false });
  const kind = args.transient ? "transient queue" : "queue";
  log("INFO", `ready: ${kind} ${queue} bound to ${args.exchange} with keys ${keys.join(" ")}`);
  current.on("close", (err) => {
    if (stopping) return;
    connection = null;
    const why = err?.message ?? "closed";
    log("WARN", `lost the connection to ${where} (${why}): reconnecting; unacked deliveries will come again`);
    start().catch(fail);
  });
}

/** Logs why the consumer cannot go on and exits non-zero. */
async function fail(e) {
  if (stopping) return;
  stopping = true;
  // A channel the broker closed has its reply code: a declaration it refused (a name in use, no
  // permission). Anything else is a bug here, with its stack.
  if (e instanceof GiveUp) log("ERROR", e.message);
  else if (typeof e.code === "number") log("ERROR", `the broker refused to set up the queue: ${e.message}`);
  else log("ERROR", e.stack ?? String(e));
  await provider.shutdown();
  process.exit(1);
}

async function stop(signal) {
  if (stopping) return;
  stopping = true;
  log("INFO", `${signal}: stopping; unacked deliveries go back to the queue`);
  try {
    await connection?.close();
  } catch {
    // already closing or closed: the broker requeues what was unacked either way
  } finally {
    await provider.shutdown();
  }
  process.exit(0);
}
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));
start().catch(fail);
