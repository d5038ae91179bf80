//! `shop events tail`: the events on `shop.events` as they pass, decoded, to follow one flow
//! by its correlation id. A temporary queue of its own (exclusive, deleted when the command
//! exits) is bound for the chosen routing keys, so tailing takes nothing from any service.

use std::io::Write;

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::ExchangeKind;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use shop_shared::config::AmqpConfig;
use shop_shared::messaging::topology;
use tokio_util::sync::CancellationToken;

use crate::cmd::inspect::broker::Broker;
use crate::cmd::inspect::decoded::{self, Decoder, MessageView};

/// `shop events …`.
#[derive(Debug, clap::Parser)]
#[command(name = "shop events")]
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EventsCommand {
    /// Print every event on shop.events as it passes: time, routing key, type, ids, trace id,
    /// actor and the body decoded into proto3 JSON. Runs until Ctrl-C or --count events.
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
struct TailArgs {
    /// Routing keys to follow, comma-separated, with the topic wildcards `*` (one word) and
    /// `#` (any words).
    #[arg(long, value_name = "KEYS", value_delimiter = ',', default_value = "#")]
    keys: Vec<String>,
    /// One JSON object per event and line.
    #[arg(long)]
    json: bool,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// Runs `shop events …`, printing to `out` until `shutdown` or the count is reached.
pub async fn run(
    args: EventsArgs,
    config: &AmqpConfig,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let EventsCommand::Tail(args) = args.command;
    let tail = Tail::bind(config, &args.keys).await?;
    // Said once everything is bound: what passes from now on is printed.
    eprintln!(
        "tailing {} on {} for {}; Ctrl-C to stop",
        tail.broker.names.exchange(),
        tail.broker.url,
        args.keys.join(",")
    );
    tail.print(args.json, args.count, shutdown, out).await
}

/// A tail bound to the exchange: every event published from now on reaches it.
#[derive(Debug)]
pub struct Tail {
    broker: Broker,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    decoder: Decoder,
}

impl Tail {
    /// Declares the tail's own queue and binds it for `keys` on `shop.events`.
    pub async fn bind(config: &AmqpConfig, keys: &[String]) -> anyhow::Result<Self> {
        let decoder = Decoder::new()?;
        let broker = Broker::connect(config, "events-tail").await?;
        match bind(&broker, keys).await {
            Ok((channel, consumer)) => Ok(Self {
                broker,
                channel,
                consumer,
                decoder,
            }),
            Err(e) => {
                broker.close().await;
                Err(e)
            }
        }
    }

    /// Prints each event as it passes until `shutdown` or `count` events.
    pub async fn print(
        mut self,
        json: bool,
        count: Option<u64>,
        shutdown: CancellationToken,
        out: &mut (dyn Write + Send),
    ) -> anyhow::Result<()> {
        let result = print(
            &mut self.consumer,
            &self.decoder,
            json,
            count,
            shutdown,
            out,
        )
        .await;
        let _ = self.channel.close(200, "tail done").await;
        self.broker.close().await;
        result
    }
}

async fn bind(
    broker: &Broker,
    keys: &[String],
) -> anyhow::Result<(lapin::Channel, lapin::Consumer)> {
    let exchange = broker.names.exchange();
    let channel = broker.channel().await?;
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true, // only look: the services declare it
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| match &e {
            lapin::Error::ProtocolError(amqp) if amqp.get_id() == 404 => anyhow::anyhow!(
                "there is no exchange {exchange} on {}: has a shop service started there (with this AMQP_PREFIX)?",
                broker.url
            ),
            _ => anyhow::Error::new(e).context(format!("cannot look up {exchange}")),
        })?;
    let channel = broker.channel().await?;
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let queue = topology::declare_tap(&channel, &broker.names, &keys)
        .await
        .context("cannot declare and bind the tail's own queue")?;
    let consumer = channel
        .basic_consume(
            &queue,
            "shop-events-tail",
            BasicConsumeOptions {
                no_ack: true, // a view: nothing to settle
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("cannot consume the tail's queue")?;
    Ok((channel, consumer))
}

async fn print(
    consumer: &mut lapin::Consumer,
    decoder: &Decoder,
    json: bool,
    count: Option<u64>,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let mut seen = 0;
    while count.is_none_or(|count| seen < count) {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery.context("the broker connection failed")?,
                None => anyhow::bail!("the broker closed the tail's queue"),
            },
        };
        seen += 1;
        let view = MessageView::read(&delivery.properties, delivery.routing_key.as_str());
        let body = decoder.body(view.message_type.as_deref(), &delivery.data);
        let received_at = decoded::rfc3339(chrono::Utc::now());
        if json {
            let mut line = view.json();
            line.insert("time".into(), json!(received_at));
            line.insert("body".into(), body.json);
            if let Some(error) = body.error {
                line.insert("body_error".into(), json!(error));
                line.insert("body_hex".into(), json!(decoded::hex(&delivery.data)));
            }
            writeln!(out, "{}", Value::Object(line))?;
        } else {
            let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{received_at}  {}  {}\n  id {}  correlation {}  causation {}  trace {}  actor {}\n  {}",
                view.routing_key,
                or_dash(&view.message_type),
                or_dash(&view.message_id),
                or_dash(&view.correlation_id),
                or_dash(&view.causation_id),
                or_dash(&view.trace_id),
                or_dash(&view.actor_id),
                match body.error {
                    None => body.json.to_string(),
                    Some(error) => format!(
                        "body does not decode ({error}): {}",
                        decoded::hex(&delivery.data)
                    ),
                }
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
