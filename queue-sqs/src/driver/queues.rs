//! Queue management: names (`.fifo` in FIFO mode), creation with the redrive policy,
//! and the cached URL and size limit of each queue.

use super::*;

#[derive(Clone)]
pub(crate) struct QueueInfo {
    pub(crate) url: String,
    pub(crate) max_size: usize,
}

impl SqsQueue {
    pub(crate) async fn create_one(
        &self,
        physical: &str,
        redrive: Option<String>,
    ) -> Result<String> {
        let mut req = self
            .client
            .create_queue()
            .queue_name(physical)
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .attributes(QueueAttributeName::MaximumMessageSize, "1048576");
        if self.config.fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(p) = redrive {
            req = req.attributes(QueueAttributeName::RedrivePolicy, p);
        }
        self.requests.count("other");
        match req.send().await {
            Ok(out) => Ok(out.queue_url().unwrap_or_default().to_string()),
            // Exists with other attributes: keep it as it is.
            Err(e)
                if e.code().is_some_and(|c| {
                    c.contains("QueueAlreadyExists") || c.contains("QueueNameExists")
                }) =>
            {
                Ok(self.lookup(physical).await?.url)
            }
            Err(e) => Err(map_sdk(e)),
        }
    }

    /// The SQS queue name for a queue name used in the API.
    pub(crate) fn physical(&self, queue: &str) -> Result<String> {
        let base = queue.strip_suffix(".fifo").unwrap_or(queue);
        let valid = !base.is_empty()
            && base.len() <= 75
            && base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(QueueError::InvalidOption(format!(
                "SQS queue names are 1-75 characters of A-Z, a-z, 0-9, - and _ (plus .fifo): {queue:?}"
            )));
        }
        Ok(if self.config.fifo {
            format!("{base}.fifo")
        } else {
            base.to_string()
        })
    }

    pub(crate) async fn lookup(&self, physical: &str) -> Result<QueueInfo> {
        self.requests.count("other");
        let url = self
            .client
            .get_queue_url()
            .queue_name(physical)
            .send()
            .await
            .map_err(map_sdk)?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        self.requests.count("other");
        let attrs = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .await
            .map_err(map_sdk)?;
        let max_size = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize))
            .and_then(|v| v.parse().ok())
            .unwrap_or(262_144);
        Ok(QueueInfo { url, max_size })
    }

    /// The queue's URL and limits, cached after the first look-up.
    pub(crate) async fn info(&self, queue: &str) -> Result<QueueInfo> {
        if let Some(i) = self
            .queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
        {
            return Ok(i.clone());
        }
        let info = self
            .lookup(&self.physical(queue)?)
            .await
            .map_err(|e| match e {
                QueueError::UnknownQueue(_) => QueueError::UnknownQueue(queue.to_string()),
                other => other,
            })?;
        self.queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_string(), info.clone());
        Ok(info)
    }
}
