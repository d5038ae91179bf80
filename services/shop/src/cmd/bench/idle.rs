//! The end of a run: the services' CPU with no traffic at all (the idle phase), and what the
//! services counted over the run, read off their `/metrics` (the rows both relay paths
//! published).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::cpu;
use super::setup::Target;

/// The idle phase's figures and the services' counts.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Quiet {
    /// Seconds the idle phase lasted (0: skipped).
    pub idle_seconds: f64,
    /// The services' CPU over the idle phase, as a fraction of one core.
    pub idle_cpu_fraction: f64,
    /// Events the services' relays published over the run.
    pub events_published: f64,
    /// Of them, rows both the fast path and the claiming relay published (duplicates the
    /// consumers' inbox absorbed).
    pub published_twice: f64,
}

/// Waits `seconds` with no traffic and charges the services' CPU over them (this process's,
/// less the load generator's, which has stopped); then reads the services' counts.
pub async fn measure(target: &Target, seconds: f64) -> Quiet {
    let mut quiet = Quiet::default();
    if seconds > 0.0 {
        let (before, _) = cpu::cpu_seconds();
        let started = Instant::now();
        // A measurement window, not a synchronisation: nothing is awaited but the time.
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let (after, _) = cpu::cpu_seconds();
        quiet.idle_seconds = started.elapsed().as_secs_f64();
        quiet.idle_cpu_fraction = (after - before) / quiet.idle_seconds;
    }
    let http = &target.http;
    for addr in [http.user, http.order, http.inventory, http.notification] {
        match scrape(addr).await {
            Ok(text) => {
                quiet.events_published += sum(&text, "messaging_client_sent_messages_total");
                quiet.published_twice += sum(&text, "shop_outbox_published_twice_total");
            }
            Err(e) => tracing::warn!(%addr, error = %e, "cannot read the service's metrics"),
        }
    }
    quiet
}

/// `GET /metrics` (HTTP/1.0: the answer ends with the connection).
async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: shop\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    Ok(answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned()))
}

/// The sum of every series of `name` in a Prometheus text exposition.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_of_a_name_is_summed_and_no_other() {
        let text =
            "# TYPE a_total counter\na_total{k=\"x\"} 2\na_total{k=\"y\"} 3\na_total_more 7\nb 1\n";
        assert_eq!(sum(text, "a_total"), 5.0);
        assert_eq!(sum(text, "b"), 1.0);
        assert_eq!(sum(text, "c"), 0.0);
    }
}
