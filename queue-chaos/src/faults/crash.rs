//! Worker crashes: several worker processes, one SIGKILLed and replaced every few seconds.
//! Jobs the killed process held come back when their lease ends (Redis, SQS) or when the
//! consumer group notices the member is gone (Kafka, after its 6 s session timeout).

use std::time::Duration;

use crate::ledger::now_ms;
use crate::report::Report;
use crate::run::{run, Ctx, Plan, Window};

/// Runs `plan` killing one worker process every `interval`, `kills` times.
pub async fn crash(plan: Plan, kills: usize, interval: Duration) -> Result<Report, String> {
    run(plan, move |mut ctx: Ctx| async move {
        let mut windows = Vec::new();
        for _ in 0..kills {
            tokio::time::sleep(interval).await;
            let at = now_ms();
            ctx.workers.kill_and_replace().await?;
            windows.push(Window { start: at, end: at });
        }
        Ok((ctx, windows))
    })
    .await
}
