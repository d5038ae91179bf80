//! Topology as code: the exchange, a service's queue and bindings, its retry queues and its
//! dead-letter queue, declared idempotently at start-up and after every reconnect; and
//! [`CONSUMERS`], the one table of who consumes what, from which every service makes sure at
//! start that every consuming service's queue exists (so an event published before its
//! consumer first started waits in that consumer's queue) and `shop topology apply` declares
//! the whole of it.
//!
//! Every argument is written out with the reason for it. Declaring an existing queue with
//! other arguments fails (PRECONDITION_FAILED), so arguments that depend on configuration are
//! part of the queue's name (the retry queues) or fixed (the delivery limit).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
use shop_proto::Event;
use shop_proto::inventory::v1 as inventory;
use shop_proto::order::v1 as order;
use shop_proto::user::{v1 as user, v2 as user_v2};

use super::{Names, RetryPolicy};

/// One consuming service's queue: the routing keys it is bound to, and the keys it was bound to
/// by an earlier version and is unbound from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerQueue {
    /// The service, which is also its queue's name (under the prefix).
    pub service: &'static str,
    /// The keys its queue is bound to, sorted.
    pub routing_keys: &'static [&'static str],
    /// Keys it consumed before and no longer does (a newer shape replaced them).
    pub moved_from: &'static [&'static str],
}

/// Who consumes what: every consuming service's queue and bindings (docs/contract.md,
/// "Events"). Each service checks at start that its handlers subscribe to exactly its row.
pub const CONSUMERS: &[ConsumerQueue] = &[
    ConsumerQueue {
        service: "inventory",
        routing_keys: &[
            order::OrderCancelled::ROUTING_KEY,
            order::OrderCreated::ROUTING_KEY,
        ],
        moved_from: &[],
    },
    ConsumerQueue {
        service: "notification",
        routing_keys: &[
            order::OrderCancelled::ROUTING_KEY,
            order::OrderConfirmed::ROUTING_KEY,
            order::OrderRejected::ROUTING_KEY,
            user_v2::UserCreated::ROUTING_KEY,
            user::UserUpdated::ROUTING_KEY,
        ],
        moved_from: &[user::UserCreated::ROUTING_KEY],
    },
    ConsumerQueue {
        service: "order",
        routing_keys: &[
            inventory::StockReservationFailed::ROUTING_KEY,
            inventory::StockReserved::ROUTING_KEY,
            order::ReservationDeadline::ROUTING_KEY,
            user::UserCreated::ROUTING_KEY,
            user::UserUpdated::ROUTING_KEY,
        ],
        moved_from: &[],
    },
];

/// The row of [`CONSUMERS`] for `service`, if it consumes.
pub fn consumer(service: &str) -> Option<&'static ConsumerQueue> {
    CONSUMERS.iter().find(|c| c.service == service)
}

/// Checks that a service's handlers subscribe to exactly what [`CONSUMERS`] says it consumes:
/// the table is what the other services declare for it, so the two must never disagree.
pub fn check_subscriptions(
    service: &str,
    routing_keys: &[&str],
    moved_from: &[&str],
) -> Result<(), String> {
    let (table_keys, table_moved) = consumer(service)
        .map(|c| (c.routing_keys.to_vec(), c.moved_from.to_vec()))
        .unwrap_or_default();
    let sorted = |keys: &[&str]| {
        let mut keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        keys.sort_unstable();
        keys
    };
    if sorted(routing_keys) != sorted(&table_keys) || sorted(moved_from) != sorted(&table_moved) {
        return Err(format!(
            "the {service} service's handlers consume {:?} (moved from {:?}), but the table of \
             consumers (shop_shared::messaging::topology::CONSUMERS) says {:?} (moved from {:?})",
            sorted(routing_keys),
            sorted(moved_from),
            sorted(&table_keys),
            sorted(&table_moved),
        ));
    }
    Ok(())
}

/// What [`ensure_queue`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The queue was there already (its owner or `shop topology apply` declared it).
    Existed,
    /// It was missing and is declared now, with its bindings and its DLQ.
    Created,
    /// It was missing and the broker user may not declare it (the error, for the log).
    Refused(String),
}

/// Makes sure `consumer`'s queue exists: looks (a passive declare, which needs no permission),
/// and declares it with its DLQ and bindings when it is missing. A queue that exists is left as
/// it is: its owner declares its own bindings at every start. Each step is on a channel of its
/// own, since the broker closes the channel of a look-up that fails.
pub async fn ensure_queue(
    connection: &Connection,
    names: &Names,
    consumer: &ConsumerQueue,
    replicas: Option<u32>,
) -> Result<Ensured, lapin::Error> {
    let queue = names.queue(consumer.service);
    let channel = connection.create_channel().await?;
    let looked = channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                passive: true, // only look
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match looked {
        Ok(_) => {
            let _ = channel.close(200, "looked").await;
            return Ok(Ensured::Existed);
        }
        Err(lapin::Error::ProtocolError(e)) if e.get_id() == 404 => {}
        Err(e) => return Err(e),
    }
    let channel = connection.create_channel().await?;
    match declare_queue(&channel, names, consumer, replicas).await {
        Ok(()) => {
            let _ = channel.close(200, "declared").await;
            Ok(Ensured::Created)
        }
        Err(lapin::Error::ProtocolError(e)) if e.get_id() == 403 => {
            Ok(Ensured::Refused(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Declares `consumer`'s queue, its DLQ and its bindings (not its retry queues: their delays
/// are its own settings), and removes the bindings it moved from.
pub async fn declare_queue(
    channel: &Channel,
    names: &Names,
    consumer: &ConsumerQueue,
    replicas: Option<u32>,
) -> Result<(), lapin::Error> {
    declare_exchange(channel, names).await?;
    declare_queues(
        channel,
        names,
        consumer.service,
        consumer.routing_keys,
        replicas,
    )
    .await?;
    unbind(channel, names, consumer.service, consumer.moved_from).await
}

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

/// Declares a tap: a queue of this connection's own (named by the broker, classic,
/// exclusive, deleted when the connection or its consumer goes, kept nowhere) bound to the
/// events exchange for `routing_keys` (`#` for every event). What `shop events tail`, the
/// benchmark's observer and the tests' probes read the events from, beside the services'
/// queues and without taking anything from them. Returns the queue's name.
pub async fn declare_tap(
    channel: &Channel,
    names: &Names,
    routing_keys: &[&str],
) -> Result<String, lapin::Error> {
    let mut arguments = FieldTable::default();
    // Exclusive queues cannot be quorum queues; nothing in it must survive.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("classic")),
    );
    let queue = channel
        .queue_declare(
            "", // named by the broker
            QueueDeclareOptions {
                passive: false,
                durable: false,    // nothing to keep over a broker restart
                exclusive: true,   // this connection's only, deleted when it closes
                auto_delete: true, // and when the consumer goes
                nowait: false,
            },
            arguments,
        )
        .await?;
    for key in routing_keys {
        channel
            .queue_bind(
                queue.name().as_str(),
                &names.exchange(),
                key.trim(),
                QueueBindOptions { nowait: false },
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue.name().as_str().to_owned())
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
    declare_queues(channel, names, service, routing_keys, replicas).await?;
    declare_retry_queues(channel, names, service, retry).await
}

/// A service's quorum queue bound to `routing_keys`, and its DLQ.
async fn declare_queues(
    channel: &Channel,
    names: &Names,
    service: &str,
    routing_keys: &[&str],
    replicas: Option<u32>,
) -> Result<(), lapin::Error> {
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
    Ok(())
}

/// One retry queue per delay of `retry`, each dead-lettering back to the service's queue.
async fn declare_retry_queues(
    channel: &Channel,
    names: &Names,
    service: &str,
    retry: &RetryPolicy,
) -> Result<(), lapin::Error> {
    let queue = names.queue(service);
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
