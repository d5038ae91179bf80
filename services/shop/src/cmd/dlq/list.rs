//! `shop dlq list` and `show`: the dead letters, one line each or in full, decoded.

use std::io::Write;

use serde_json::json;

use super::dead_letter::{DeadLetter, Groups};
use super::held::Held;
use crate::cmd::inspect::broker::Broker;
use crate::cmd::inspect::decoded::Decoder;

use super::{KNOWN_QUEUES, consuming_queue, count, time_or_unknown};

pub(super) async fn list(
    broker: &Broker,
    decoder: &Decoder,
    extra: &[String],
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut queues: Vec<&str> = KNOWN_QUEUES.to_vec();
    for queue in extra {
        let queue = consuming_queue(queue);
        if broker.depth(&broker.names.dlq(queue)).await?.is_none() {
            anyhow::bail!(
                "there is no queue {} on {}",
                broker.names.dlq(queue),
                broker.url
            );
        }
        if !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    let mut found = 0;
    for queue in queues {
        let dlq = broker.names.dlq(queue);
        if broker.depth(&dlq).await?.is_none() {
            continue;
        }
        found += 1;
        let mut held = Held::take(broker, &dlq).await?;
        let mut groups = Groups::default();
        let read = async {
            while let Some(held_letter) = held.next(decoder).await? {
                groups.add(&held_letter.letter);
                held.keep(held_letter).await?;
            }
            anyhow::Ok(())
        }
        .await;
        let depth = held.taken;
        held.release().await?;
        read?;
        let groups = groups.into_vec();
        if json {
            let line = json!({
                "queue": dlq,
                "consumer_queue": queue,
                "depth": depth,
                "groups": groups.iter().map(super::dead_letter::Group::json).collect::<Vec<_>>(),
            });
            writeln!(out, "{line}")?;
            continue;
        }
        writeln!(out, "{dlq}: {}", count(depth, "message"))?;
        for group in &groups {
            writeln!(
                out,
                "  group {}: {} × {}\n    reason: {}\n    died: {} … {}",
                group.number,
                group.count,
                group.message_type,
                group.reason,
                time_or_unknown(group.oldest),
                time_or_unknown(group.newest),
            )?;
        }
    }
    if found == 0 && !json {
        writeln!(
            out,
            "no dead-letter queue on {} among {} (name others with --queue)",
            broker.url,
            KNOWN_QUEUES
                .iter()
                .map(|q| broker.names.dlq(q))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(())
}

pub(super) async fn show(
    broker: &Broker,
    decoder: &Decoder,
    queue: &str,
    limit: Option<usize>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let dlq = broker.names.dlq(consuming_queue(queue));
    let mut held = Held::take(broker, &dlq).await?;
    let result = show_held(&mut held, decoder, limit.unwrap_or(usize::MAX), json, out).await;
    held.release().await?;
    result
}

/// Writes the first `limit` held messages as they come, then reads the rest without keeping
/// them (the queue is taken whole, so that it goes back in its order).
async fn show_held(
    held: &mut Held,
    decoder: &Decoder,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if !json {
        writeln!(
            out,
            "{}: {}, showing {}",
            held.dlq,
            count(held.depth, "message"),
            held.depth.min(limit)
        )?;
    }
    while held.taken < limit {
        let Some(held_letter) = held.next(decoder).await? else {
            return Ok(());
        };
        if json {
            writeln!(out, "{}", held_letter.letter.json())?;
        } else {
            write_letter(out, &held_letter.letter)?;
        }
        held.keep(held_letter).await?;
    }
    held.keep_rest(decoder).await
}

fn write_letter(out: &mut dyn Write, letter: &DeadLetter) -> std::io::Result<()> {
    let v = &letter.view;
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "\nmessage {}  {}", letter.id(), letter.type_name())?;
    writeln!(out, "  routing key  {}", v.routing_key)?;
    writeln!(out, "  reason       {}", letter.reason)?;
    writeln!(
        out,
        "  retries      {}   replayed {}",
        letter.retry_count, letter.replayed_count
    )?;
    writeln!(out, "  died at      {}", time_or_unknown(letter.died_at))?;
    writeln!(out, "  correlation  {}", or_dash(&v.correlation_id))?;
    writeln!(out, "  causation    {}", or_dash(&v.causation_id))?;
    writeln!(out, "  trace        {}", or_dash(&v.trace_id))?;
    writeln!(out, "  actor        {}", or_dash(&v.actor_id))?;
    writeln!(
        out,
        "  headers      {}",
        serde_json::Value::Object(v.headers.clone())
    )?;
    match &letter.body.error {
        None => {
            let body = serde_json::to_string_pretty(&letter.body.json).unwrap_or_default();
            writeln!(
                out,
                "  body         {}",
                body.replace('\n', "\n               ")
            )
        }
        Some(error) => writeln!(
            out,
            "  body         null ({error})\n  body (hex)   {}",
            letter.body_hex
        ),
    }
}
