// Finds the generated @bufbuild/protobuf schema of an event by its full protobuf name.
//
// Events arrive with their full name in the AMQP `type` property, so a consumer needs a map from
// that name to a schema. This module loads every file generated into gen/ by `npm run generate`
// into one registry, and reads each event's routing key from the `(shop.events.v1.routing_key)`
// option.
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRegistry, getOption, hasOption } from "@bufbuild/protobuf";

const GEN = join(dirname(fileURLToPath(import.meta.url)), "gen");
if (!existsSync(join(GEN, "shop"))) {
  throw new Error(`${GEN} is missing: run \`npm run generate\` first (see examples/README.md)`);
}

const files = [];
for (const path of readdirSync(GEN, { recursive: true })) {
  if (!String(path).endsWith("_pb.js")) continue;
  const module = await import(pathToFileURL(join(GEN, String(path))).href);
  for (const [name, value] of Object.entries(module)) {
    if (name.startsWith("file_")) files.push(value);
  }
}
const { routing_key } = await import(pathToFileURL(join(GEN, "shop/events/v1/options_pb.js")).href);

/** Every generated message, enum and extension, looked up by full name. */
export const registry = createRegistry(...files);

/** The schema of the message called `typeName`, or undefined if this build does not know it. */
export function schemaOf(typeName) {
  return registry.getMessage(typeName);
}

/** Every event type this build knows, with its routing key: [[full name, routing key]]. */
export function routingKeys() {
  const keys = [];
  for (const desc of registry) {
    if (desc.kind === "message" && hasOption(desc, routing_key)) {
      keys.push([desc.typeName, getOption(desc, routing_key)]);
    }
  }
  return keys;
}
