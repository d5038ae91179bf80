//! The gauges a session samples in the background: the ready messages in the service's queue
//! and in its dead-letter queue, each metrics interval, by a passive declare.

use lapin::Channel;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::session::Inner;

impl Inner {
    /// Samples the depth of the service's queue and of its dead-letter queue every metrics interval until
    /// `shutdown`, on a channel of its own (a passive declare; each channel it opens is handed
    /// to `keep`). A failed sample is logged at DEBUG and retried on a new channel: it never
    /// ends the session.
    pub(super) async fn sample_queues(
        &self,
        keep: &(dyn Fn(&Channel) + Sync),
        shutdown: CancellationToken,
    ) {
        let dlq = self.names.dlq(&self.service);
        let queue = self.names.queue(&self.service);
        let mut channel: Option<Channel> = None;
        loop {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                channel = self.link.channel().await.ok().map(|leased| leased.channel);
                if let Some(c) = &channel {
                    keep(c);
                }
            }
            if let Some(c) = &channel {
                // The service's own queue: how many messages wait to be delivered.
                let own = c
                    .queue_declare(
                        &queue,
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                match own {
                    Ok(q) => self.metrics.queue_sampled(&queue, q.message_count()),
                    Err(e) => {
                        tracing::debug!(queue = %queue, error = %e, "queue sample failed")
                    }
                }
            }
            if let Some(c) = &channel
                && c.status().connected()
            {
                let declared = c
                    .queue_declare(
                        &dlq,
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                match declared {
                    Ok(queue) => self
                        .metrics
                        .dead_letters_sampled(&dlq, queue.message_count()),
                    Err(e) => {
                        tracing::debug!(queue = %dlq, error = %e, "dead-letter sample failed")
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.metrics_interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}
