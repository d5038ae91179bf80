//! The operator tools' way to the broker (`shop dlq`, `shop events tail`): one connection from
//! `AMQP_URL` and `AMQP_PREFIX`, failures worded like the services' start-up errors (the URL
//! named, its password masked), and queue look-ups that name a missing queue instead of
//! failing with the channel the broker closed.

use anyhow::Context as _;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use shop_shared::config::AmqpConfig;
use shop_shared::messaging::Names;
use shop_shared::messaging::connection::connect;

/// A connection of an operator tool, with the names of its prefix.
#[derive(Debug)]
pub struct Broker {
    connection: Connection,
    /// Every name under `AMQP_PREFIX`.
    pub names: Names,
    /// `AMQP_URL`, password masked, for messages.
    pub url: String,
}

impl Broker {
    /// Connects as `tool` (the connection's name in `rabbitmqctl list_connections`).
    pub async fn connect(config: &AmqpConfig, tool: &str) -> anyhow::Result<Self> {
        shop_shared::diagnose::check_amqp_url(&config.url, "AMQP_URL")?;
        let names = Names::new(config.prefix.clone());
        let connection = connect(&config.url, &names.connection_name("tools", tool))
            .await
            .map_err(|e| shop_shared::diagnose::rabbitmq(&config.url, "AMQP_URL", &e))?;
        Ok(Self {
            connection,
            names,
            url: shop_shared::diagnose::redact(&config.url),
        })
    }

    /// A channel with publisher confirms on.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let channel = self
            .connection
            .create_channel()
            .await
            .with_context(|| format!("cannot open a channel on {}", self.url))?;
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await
            .with_context(|| format!("cannot turn on publisher confirms on {}", self.url))?;
        Ok(channel)
    }

    /// The number of ready messages in `queue`, or `None` when there is no such queue. Asks
    /// on a channel of its own: the broker closes the channel of a look-up that fails.
    pub async fn depth(&self, queue: &str) -> anyhow::Result<Option<u32>> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true, // only look: never create a queue
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(queue) => {
                let _ = channel.close(200, "looked").await;
                Ok(Some(queue.message_count()))
            }
            Err(lapin::Error::ProtocolError(e)) if e.get_id() == 404 => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot look up queue {queue} on {}", self.url))
            }
        }
    }

    /// The depth of `queue`, failing with a message naming it when it does not exist.
    pub async fn existing_depth(&self, queue: &str, hint: &str) -> anyhow::Result<u32> {
        self.depth(queue)
            .await?
            .with_context(|| format!("there is no queue {queue} on {}{hint}", self.url))
    }

    /// Closes the connection cleanly (the broker returns every unacknowledged delivery to
    /// its queue, in order).
    pub async fn close(self) {
        let _ = self.connection.close(200, "done").await;
    }
}
