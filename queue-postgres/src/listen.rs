//! The listening connection: `LISTEN queue_<schema>`, and a wake-up per queue for the
//! driver's long polls.
//!
//! A notification carries the queue's name (sent by the insert trigger at commit, and by
//! the driver's nack and keyed ack). The task reconnects after a loss (waiting 1 s
//! between tries) and wakes every waiter when it does, since notifications sent while it
//! was away are lost; until then long polls fall back to the driver's `poll_interval`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

/// Wake-ups by queue name.
#[derive(Default)]
pub(crate) struct Wakers {
    by_queue: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    /// The wake-up of `queue` (created on first use).
    pub(crate) fn of(&self, queue: &str) -> Arc<Notify> {
        let mut m = self.by_queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get(queue) {
            return n.clone();
        }
        if m.len() > 10_000 {
            // Names of queues long gone; whoever waits holds its own Arc.
            m.retain(|_, n| Arc::strong_count(n) > 1);
        }
        m.entry(queue.to_string()).or_default().clone()
    }

    /// Wakes the long polls on `queue` in this process.
    pub(crate) fn wake(&self, queue: &str) {
        let m = self.by_queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get(queue) {
            n.notify_waiters();
        }
    }

    fn wake_all(&self) {
        let m = self.by_queue.lock().unwrap_or_else(|p| p.into_inner());
        for n in m.values() {
            n.notify_waiters();
        }
    }
}

/// Runs the listening connection until the task is aborted (the driver's drop).
pub(crate) async fn run(config: tokio_postgres::Config, channel: String, wakers: Arc<Wakers>) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let ok = {
                    let sql = format!("LISTEN \"{channel}\"");
                    // The LISTEN completes only while the connection is driven.
                    let mut listen = std::pin::pin!(client.batch_execute(&sql));
                    loop {
                        tokio::select! {
                            r = &mut listen => break r.is_ok(),
                            m = messages.next() => match m {
                                Some(Ok(_)) => {}
                                _ => break false,
                            },
                        }
                    }
                };
                if ok {
                    // Anything sent while this connection was away was missed.
                    wakers.wake_all();
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => wakers.wake(n.payload()),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "postgres: listening connection failed");
                                break;
                            }
                        }
                    }
                }
                drop(client);
                tracing::warn!("postgres: listening connection lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "postgres: cannot open the listening connection"),
        }
        wakers.wake_all();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
