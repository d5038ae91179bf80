//! `shop catalog`: the event catalog as an AsyncAPI 3.0 document, generated from the
//! contracts' descriptor set (never written by hand): the `shop.events` exchange, one channel
//! and one send operation per routing key, each message's payload schema derived from its
//! proto fields with the proto comments as descriptions, the AMQP bindings, and the headers
//! of docs/contract.md. `docs/asyncapi.json` is its committed output; a test fails when it is stale.
//!
//! Each channel also says which services consume it (`x-shop-consumers`, from the services'
//! own subscriptions) and whether its shape is deprecated (`x-shop-deprecated`: the message's
//! proto comment has a `Deprecated:` paragraph naming the shape that supersedes it), so a
//! reader sees both versions of an event that has a v2 and who still reads the old one.

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// The full name of the option that marks an event and names its routing key.
const ROUTING_KEY_OPTION: &str = "shop.events.v1.routing_key";

/// The AsyncAPI document of every event in `descriptor_set`.
pub fn asyncapi(descriptor_set: &[u8]) -> anyhow::Result<Value> {
    let pool = DescriptorPool::decode(descriptor_set)?;
    let option = pool
        .get_extension_by_name(ROUTING_KEY_OPTION)
        .ok_or_else(|| anyhow::anyhow!("the descriptor set has no {ROUTING_KEY_OPTION}"))?;
    let mut events: Vec<(String, MessageDescriptor)> = pool
        .all_messages()
        .filter_map(|m| {
            let options = m.options();
            let key = options.get_extension(&option).as_str()?.to_owned();
            (!key.is_empty()).then_some((key, m))
        })
        .collect();
    events.sort_by(|a, b| a.0.cmp(&b.0));

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut schemas = Map::new();
    schemas.insert("EventHeaders".into(), headers_schema());
    for (key, message) in &events {
        let id = key.replace('.', "_");
        let name = component_name(message);
        let consumers = consumers(key);
        let summary = comment(message.parent_file_descriptor_proto(), message.path());
        let deprecated = summary
            .as_deref()
            .is_some_and(|c| c.contains("Deprecated:"));
        let mut description = format!(
            "{} events. Consumed by: {}.",
            message.full_name(),
            if consumers.is_empty() {
                "none yet".to_owned()
            } else {
                consumers.join(", ")
            }
        );
        if deprecated {
            description.push_str(" Deprecated: see the message's description for its successor.");
        }
        channels.insert(
            id.clone(),
            json!({
                "address": key,
                "title": key,
                "description": description,
                "x-shop-consumers": consumers,
                "x-shop-deprecated": deprecated,
                "messages": { &name: { "$ref": format!("#/components/messages/{name}") } },
                "bindings": { "amqp": {
                    "is": "routingKey",
                    "exchange": { "name": "shop.events", "type": "topic", "durable": true, "autoDelete": false, "vhost": "/" },
                    "bindingVersion": "0.3.0"
                } }
            }),
        );
        operations.insert(
            format!("publish_{id}"),
            json!({
                "action": "send",
                "summary": format!("The owning service publishes {} (routing key {key}) on shop.events.", message.full_name()),
                "channel": { "$ref": format!("#/channels/{id}") },
                "messages": [ { "$ref": format!("#/channels/{id}/messages/{name}") } ],
                "bindings": { "amqp": { "deliveryMode": 2, "mandatory": false, "bindingVersion": "0.3.0" } }
            }),
        );
        messages.insert(
            name.clone(),
            json!({
                "name": message.full_name(),
                "title": name,
                "summary": summary,
                "x-shop-deprecated": deprecated,
                "contentType": "application/x-protobuf",
                "headers": { "$ref": "#/components/schemas/EventHeaders" },
                "payload": { "$ref": format!("#/components/schemas/{}", message.full_name()) },
                "correlationId": { "location": "$message.header#/correlation_id" },
                "bindings": { "amqp": { "messageType": message.full_name(), "bindingVersion": "0.3.0" } }
            }),
        );
        add_schema(message, &mut schemas);
    }
    Ok(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "shop events",
            "version": "1.0.0",
            "description": "Domain events of shop on the durable topic exchange shop.events. Bodies are binary protobuf (compile proto/ in any language); every message is persistent and carries the AMQP properties message_id (UUID v7, the de-duplication key), type (the full protobuf name), content_type, timestamp, app_id and correlation_id, and the headers in EventHeaders. Generated by `shop catalog` from the descriptor set."
        },
        "defaultContentType": "application/x-protobuf",
        "servers": { "local": { "host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1" } },
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages, "schemas": schemas }
    }))
}

fn headers_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "traceparent": { "type": "string", "description": "W3C trace context of the span that produced the event." },
            "tracestate": { "type": "string", "description": "W3C trace state." },
            "x-causation-id": { "type": "string", "description": "message_id of the message that caused this one (absent for flows started by a gRPC call)." },
            "x-actor-id": { "type": "string", "description": "user_id of the authenticated caller whose command started the flow; every event the flow causes keeps it (absent when the command had no caller, e.g. CreateUser)." },
            "x-retry-count": { "type": "integer", "description": "On retried and dead-lettered copies: failed attempts so far." },
            "x-death-reason": { "type": "string", "description": "On dead-lettered copies: why." },
            "x-original-routing-key": { "type": "string", "description": "On retried and dead-lettered copies: the routing key it was published with." }
        }
    })
}

/// A message's name in the document: its proto name, with the package's version after v1
/// (`UserCreated`, `UserCreatedV2`), so two versions of one event never share a name.
fn component_name(message: &MessageDescriptor) -> String {
    match message.package_name().rsplit('.').next() {
        Some(version) if version != "v1" && version.starts_with('v') => {
            format!("{}{}", message.name(), version.to_uppercase())
        }
        _ => message.name().to_owned(),
    }
}

/// The services whose queue is bound to `routing_key`.
fn consumers(routing_key: &str) -> Vec<&'static str> {
    [
        ("order", shop_order::consumed_routing_keys()),
        ("inventory", shop_inventory::consumed_routing_keys()),
        ("notification", shop_notification::consumed_routing_keys()),
    ]
    .into_iter()
    .filter(|(_, keys)| keys.contains(&routing_key))
    .map(|(service, _)| service)
    .collect()
}

/// The JSON Schema of `message` and of every message it uses, keyed by full name.
fn add_schema(message: &MessageDescriptor, schemas: &mut Map<String, Value>) {
    if schemas.contains_key(message.full_name()) {
        return;
    }
    if message.full_name() == "google.protobuf.Timestamp" {
        schemas.insert(
            message.full_name().into(),
            json!({ "type": "string", "format": "date-time", "description": "A point in time (google.protobuf.Timestamp)." }),
        );
        return;
    }
    schemas.insert(message.full_name().into(), Value::Null); // breaks cycles
    let mut properties = Map::new();
    for field in message.fields() {
        let mut schema = field_schema(&field, schemas);
        if let (Value::Object(map), Some(text)) = (
            &mut schema,
            comment(message.parent_file_descriptor_proto(), field.path()),
        ) {
            map.insert("description".into(), Value::String(text));
        }
        if let Value::Object(map) = &mut schema {
            map.insert("x-protobuf-field-number".into(), json!(field.number()));
        }
        properties.insert(field.name().into(), schema);
    }
    let mut schema = json!({ "type": "object", "properties": properties });
    if let Some(text) = comment(message.parent_file_descriptor_proto(), message.path()) {
        if text.contains("Deprecated:") {
            schema["deprecated"] = Value::Bool(true);
        }
        schema["description"] = Value::String(text);
    }
    schemas.insert(message.full_name().into(), schema);
}

fn field_schema(field: &FieldDescriptor, schemas: &mut Map<String, Value>) -> Value {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let value = entry.map_entry_value_field();
        return json!({ "type": "object", "additionalProperties": field_schema(&value, schemas) });
    }
    let single = match field.kind() {
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "format": "uint32" }),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "integer", "format": "int64" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": "integer", "format": "uint64" }),
        Kind::Float | Kind::Double => json!({ "type": "number" }),
        Kind::Enum(e) => {
            json!({ "type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>() })
        }
        Kind::Message(m) => {
            add_schema(&m, schemas);
            json!({ "$ref": format!("#/components/schemas/{}", m.full_name()) })
        }
    };
    if field.is_list() {
        json!({ "type": "array", "items": single })
    } else {
        single
    }
}

/// The leading comment of the element at `path` in `file`, trimmed.
fn comment(file: &prost_types::FileDescriptorProto, path: &[i32]) -> Option<String> {
    file.source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|location| location.path == path)?
        .leading_comments
        .as_deref()
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|c| !c.is_empty())
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn render(descriptor_set: &[u8]) -> anyhow::Result<String> {
    Ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&asyncapi(descriptor_set)?)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_event_has_a_channel_an_operation_and_a_described_payload() {
        let doc = asyncapi(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        for (type_name, key) in shop_proto::ALL_EVENTS {
            let id = key.replace('.', "_");
            assert_eq!(doc["channels"][&id]["address"], *key);
            assert!(doc["operations"][format!("publish_{id}")].is_object());
            let schema = &doc["components"]["schemas"][*type_name];
            assert_eq!(schema["type"], "object", "{type_name}");
            assert!(
                schema["description"].is_string(),
                "{type_name} has its proto comment"
            );
        }
        let created = &doc["components"]["schemas"]["shop.order.v1.OrderCreated"]["properties"];
        assert_eq!(created["items"]["type"], "array");
        assert_eq!(created["total_cents"]["format"], "int64");
        assert!(
            created["order_id"]["description"]
                .as_str()
                .unwrap()
                .contains("order")
        );
    }

    #[test]
    fn both_versions_of_user_created_are_there_with_their_consumers_and_the_old_one_deprecated() {
        let doc = asyncapi(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let v1 = &doc["channels"]["user_created"];
        let v2 = &doc["channels"]["user_created_v2"];
        assert_eq!(v1["x-shop-consumers"], json!(["order"]));
        assert_eq!(v1["x-shop-deprecated"], true);
        assert_eq!(v2["x-shop-consumers"], json!(["notification"]));
        assert_eq!(v2["x-shop-deprecated"], false);
        assert!(doc["components"]["messages"]["UserCreatedV2"].is_object());
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["shop.user.v1.UserCreated"]["deprecated"], true);
        assert_eq!(
            schemas["shop.user.v2.UserCreated"]["properties"]["metadata"]["additionalProperties"]["type"],
            "string"
        );
    }

    #[test]
    fn the_committed_catalog_is_up_to_date() {
        let committed = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/asyncapi.json"
        ));
        let generated = render(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        assert!(
            committed == generated,
            "docs/asyncapi.json is stale: run `cargo run --bin shop -- catalog > docs/asyncapi.json`"
        );
    }
}
