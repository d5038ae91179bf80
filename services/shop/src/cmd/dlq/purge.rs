//! `shop dlq purge`: the chosen dead letters deleted, asked for first when they are all.

use std::io::{BufRead as _, Write};

use super::held::Held;
use super::replay::{Chooser, Pick};
use crate::cmd::inspect::broker::Broker;
use crate::cmd::inspect::decoded::Decoder;

use super::{consuming_queue, count};

pub(super) async fn purge(
    broker: &Broker,
    decoder: &Decoder,
    queue: &str,
    pick: Pick<'_>,
    yes: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let dlq = broker.names.dlq(consuming_queue(queue));
    let mut held = Held::take(broker, &dlq).await?;
    let result = purge_held(&mut held, decoder, pick, yes, out).await;
    held.release().await?;
    result
}

/// A message chosen for deletion: what the question and the answer name of it.
struct Doomed {
    tag: u64,
    id: String,
    message_type: String,
}

async fn purge_held(
    held: &mut Held,
    decoder: &Decoder,
    pick: Pick<'_>,
    yes: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if matches!(pick, Pick::All) && !yes && held.depth > 0 {
        // Everything: asked by the count first, then deleted as it is read (a deep queue is
        // never held whole).
        eprintln!(
            "about to delete all {} of {} for good",
            count(held.depth, "message"),
            held.dlq
        );
        confirm_deletion()?;
    }
    let mut chooser = Chooser::new(pick);
    let mut chosen = Vec::new();
    let mut deleted = 0;
    while let Some(held_letter) = held.next(decoder).await? {
        if !chooser.takes(&held_letter.letter) {
            held.keep(held_letter).await?;
        } else if matches!(pick, Pick::All) {
            held.remove(held_letter.tag).await?;
            deleted += 1;
            let letter = &held_letter.letter;
            writeln!(out, "  {}  {}", letter.id(), letter.type_name())?;
        } else {
            anyhow::ensure!(
                chosen.len() < super::held::WINDOW,
                "more than {} of the chosen ids are in {}: purge at most {} at a time (or --all); nothing was deleted",
                super::held::WINDOW,
                held.dlq,
                super::held::WINDOW
            );
            chosen.push(Doomed {
                tag: held_letter.tag,
                id: held_letter.letter.id().to_owned(),
                message_type: held_letter.letter.type_name().to_owned(),
            });
        }
    }
    if matches!(pick, Pick::All) {
        if deleted == 0 {
            writeln!(out, "{} is empty: nothing to delete", held.dlq)?;
            return Ok(());
        }
        writeln!(
            out,
            "deleted {} from {}",
            count(deleted, "message"),
            held.dlq
        )?;
        writeln!(out, "left in {}: 0", held.dlq)?;
        return Ok(());
    }
    chooser.check(&held.dlq, "nothing was deleted")?;
    if chosen.is_empty() {
        writeln!(out, "{} is empty: nothing to delete", held.dlq)?;
        return Ok(());
    }
    if !yes {
        eprintln!(
            "about to delete {} from {} for good:",
            count(chosen.len(), "message"),
            held.dlq
        );
        for doomed in &chosen {
            eprintln!("  {}  {}", doomed.id, doomed.message_type);
        }
        confirm_deletion()?;
    }
    for doomed in &chosen {
        held.remove(doomed.tag).await?;
    }
    writeln!(
        out,
        "deleted {} from {}:",
        count(chosen.len(), "message"),
        held.dlq
    )?;
    for doomed in &chosen {
        writeln!(out, "  {}  {}", doomed.id, doomed.message_type)?;
    }
    writeln!(out, "left in {}: {}", held.dlq, held.taken - chosen.len())?;
    Ok(())
}

/// Asks on the terminal whether to delete; fails unless the answer is yes.
fn confirm_deletion() -> anyhow::Result<()> {
    eprint!("delete them? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        anyhow::bail!("not confirmed: nothing was deleted (pass --yes to skip the question)");
    }
    Ok(())
}
