//! What a receive does beside its `ReceiveMessage` call: a message received before its due
//! time is sent on with the rest of its delay, and whatever a cancelled long poll brings
//! after its receive returned is given back at once.

use super::*;

impl SqsQueue {
    /// A handle on the same client and queue cache, for a task that outlives a call.
    pub(crate) fn detached(&self) -> SqsQueue {
        SqsQueue {
            client: self.client.clone(),
            config: self.config.clone(),
            queues: self.queues.clone(),
            requests: self.requests.clone(),
        }
    }

    /// The end of a long poll whose receive was cancelled: whatever SQS leased to it is
    /// given back at once (as [`Driver::give_back`] does: the attempt is kept where it can
    /// be), so that it is not hidden for the rest of its visibility timeout.
    pub(crate) async fn give_back_late(
        self,
        queue: String,
        poll: tokio::task::JoinHandle<
            std::result::Result<
                aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput,
                SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>,
            >,
        >,
    ) {
        let Ok(Ok(out)) = poll.await else { return };
        for m in out.messages.unwrap_or_default() {
            let d = codec::decode(&queue, m.into());
            let back = self.give_back(&d, Duration::ZERO).await;
            if let Err(e) = back {
                tracing::warn!(queue, error = %e, "could not give back a message a cancelled receive got; it returns when its lease ends");
            }
        }
    }

    /// A message received before its due time (delays over 15 minutes): sent on with the
    /// rest of its delay, then the early copy deleted. Returns true when it was re-delayed.
    pub(crate) async fn redelay_if_early(
        &self,
        info: &QueueInfo,
        m: &aws_sdk_sqs::types::Message,
    ) -> Result<bool> {
        let due = m
            .message_attributes()
            .and_then(|a| a.get(ATTR_NOT_BEFORE))
            .and_then(|v| v.string_value())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(due) = due else { return Ok(false) };
        let now = unix_millis(SystemTime::now());
        if due <= now {
            return Ok(false);
        }
        let left = Duration::from_millis(due - now);
        let mut e = SendMessageBatchRequestEntry::builder()
            .id("0")
            .message_body(m.body().unwrap_or("-"))
            .delay_seconds(secs_ceil(left.min(MAX_SQS_DELAY)) as i32);
        for (k, v) in m.message_attributes().into_iter().flatten() {
            e = e.message_attributes(k, v.clone());
        }
        let e = e.build().map_err(|e| QueueError::backend(BACKEND, e))?;
        self.send_entries(&info.url, vec![e]).await?;
        self.delete(
            &info.url,
            &[receipt(m.receipt_handle().unwrap_or_default())],
        )
        .await?;
        Ok(true)
    }
}
