//! Topology as code: the exchange, a service's queue and bindings, its retry queues and its
//! dead-letter queue, declared idempotently at start-up and after every reconnect.
//!
//! Every argument is written out with the reason for it. Declaring an existing queue with
//! other arguments fails (PRECONDITION_FAILED), so arguments that depend on configuration are
//! part of the queue's name (the retry queues) or fixed (the delivery limit).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::{Names, RetryPolicy};

/// The quorum queue's delivery limit: how often the broker redelivers one message that was
/// never acknowledged (a consumer crashed or nacked it) before dead-lettering it itself.
/// Application retries acknowledge the original and publish a copy, so they do not count
/// here; this only bounds crash loops, and it is far above the retry budget so the broker
/// never gives up on a message before the application does.
pub const DELIVERY_LIMIT: i64 = 50;

/// Declares the durable topic exchange every event goes to.
pub async fn declare_exchange(channel: &Channel, names: &Names) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            &names.exchange(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: false,     // create it if it does not exist
                durable: true,      // survives a broker restart
                auto_delete: false, // stays when no queue is bound
                internal: false,    // publishers publish to it directly
                nowait: false,      // wait for the broker's answer, so errors surface here
            },
            FieldTable::default(),
        )
        .await
}

/// Removes the bindings of `service`'s queue for `routing_keys` (keys it consumed before and
/// no longer does); a binding that does not exist is not an error.
pub async fn unbind(
    channel: &Channel,
    names: &Names,
    service: &str,
    routing_keys: &[&str],
) -> Result<(), lapin::Error> {
    for key in routing_keys {
        channel
            .queue_unbind(
                &names.queue(service),
                &names.exchange(),
                key,
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares everything a consuming service needs: the exchange, its quorum queue bound to
/// `routing_keys`, one retry queue per delay of `retry`, and its DLQ. `replicas` is the quorum
/// queues' initial group size (`QUEUE_REPLICAS`; `None`: RabbitMQ's default). RabbitMQ fixes a
/// quorum queue's membership when it is declared: a later declare with another size changes
/// nothing, and a queue grows onto new nodes only by `rabbitmq-queues add_member` or `grow`.
pub async fn declare_consumer(
    channel: &Channel,
    names: &Names,
    service: &str,
    routing_keys: &[&str],
    retry: &RetryPolicy,
    replicas: Option<u32>,
) -> Result<(), lapin::Error> {
    declare_exchange(channel, names).await?;
    let queue = names.queue(service);
    let dlq = names.dlq(service);

    let mut dlq_args = FieldTable::default();
    // Quorum: replicated and durable, the queue type RabbitMQ recommends for data safety.
    dlq_args.insert("x-queue-type".into(), text("quorum"));
    if let Some(replicas) = replicas {
        // On how many nodes the queue's replicas live (fixed at declaration).
        dlq_args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(i64::from(replicas)),
        );
    }
    channel
        .queue_declare(&dlq, durable_queue(), dlq_args)
        .await?;

    let mut args = FieldTable::default();
    // Quorum: replicated, durable, and it counts redeliveries (x-delivery-limit below).
    args.insert("x-queue-type".into(), text("quorum"));
    // Bounds crash loops; see DELIVERY_LIMIT.
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    // What the broker dead-letters itself (delivery limit exceeded) goes to the DLQ through
    // the default exchange, never nowhere.
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(&dlq));
    if let Some(replicas) = replicas {
        // On how many nodes the queue's replicas live (fixed at declaration).
        args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(i64::from(replicas)),
        );
    }
    channel.queue_declare(&queue, durable_queue(), args).await?;

    for key in routing_keys {
        channel
            .queue_bind(
                &queue,
                &names.exchange(),
                key,
                QueueBindOptions { nowait: false },
                FieldTable::default(),
            )
            .await?;
    }

    for delay in retry.delays() {
        let mut args = FieldTable::default();
        // Classic queue: a message only waits here for its TTL; the same durability applies.
        args.insert("x-queue-type".into(), text("classic"));
        // Every message waits exactly this long…
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        );
        // …then is dead-lettered by the broker back to the service queue through the default
        // exchange (routing key = queue name), so only this service sees the retry.
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(&queue));
        channel
            .queue_declare(&names.retry_queue(service, delay), durable_queue(), args)
            .await?;
    }
    Ok(())
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: false,     // create it if it does not exist
        durable: true,      // survives a broker restart (quorum queues must be durable)
        exclusive: false,   // shared by every replica of the service
        auto_delete: false, // stays when the last consumer leaves
        nowait: false,      // wait for the broker's answer
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.to_owned()))
}
