//! `Driver::peek` on SQS: dead-letter queues only (see the trait method's docs in lib.rs
//! for why a main queue is refused).

use super::*;

impl SqsQueue {
    /// Up to `max` messages of dead-letter queue `queue`, each looked at with a
    /// `ReceiveMessage` of visibility timeout 0; standard queues answer with a sample per
    /// call, so up to 50 short polls are made, until one brings nothing new.
    pub(crate) async fn peek_dead_letters(&self, queue: &str, max: usize) -> Result<Vec<Peeked>> {
        if !queue
            .strip_suffix(".fifo")
            .unwrap_or(queue)
            .ends_with("-dlq")
        {
            return Err(QueueError::unsupported(
                BACKEND,
                "peek on a main queue (a look counts a receive toward its maxReceiveCount); \
                 dead-letter queues can be peeked",
            ));
        }
        let info = self.info(queue).await?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..50 {
            if out.len() >= max {
                break;
            }
            self.requests.count("receive");
            let got = self
                .client
                .receive_message()
                .queue_url(&info.url)
                .max_number_of_messages((max - out.len()).min(10) as i32)
                .wait_time_seconds(0)
                .visibility_timeout(0)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(map_sdk)?;
            let mut fresh = false;
            for m in got.messages.unwrap_or_default() {
                let d = codec::decode(queue, m.into());
                if seen.insert(d.id.clone()) {
                    fresh = true;
                    out.push(
                        Peeked::new(d.id, d.payload)
                            .with_headers(d.headers)
                            .with_deliveries(d.attempt.saturating_sub(1))
                            .with_first_enqueued_at(d.first_enqueued_at)
                            .with_ordering_key(d.ordering_key),
                    );
                }
            }
            if !fresh {
                break;
            }
        }
        out.truncate(max);
        Ok(out)
    }
}
