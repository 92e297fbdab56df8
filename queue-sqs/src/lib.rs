//! # queue-sqs
//!
//! The AWS SQS driver for [`queue_core`], for standard and FIFO queues, on `aws-sdk-sqs`.
//! Applications use it through the `queue` crate's `sqs` feature (without the facade,
//! call [`register`] once at start-up), then `queue::connect("sqs://us-east-1")` (credentials from the standard AWS provider
//! chain) or, against a local server, `sqs://KEY:SECRET@us-east-1?endpoint=http://127.0.0.1:4566`.
//!
//! ## Mapping
//!
//! | primitive | SQS |
//! |---|---|
//! | create | `CreateQueue` for `Q-dlq`, then `Q` with a `RedrivePolicy` to it (`maxReceiveCount`, default 25: the worker's default retry policy's attempts), 14-day retention and a 1 MiB `MaximumMessageSize` |
//! | send | `SendMessageBatch`, up to 10 entries and the queue's `MaximumMessageSize` per request; entries in the `Failed` list that were not the sender's fault are retried (3 tries), the rest are a typed error |
//! | receive | `ReceiveMessage` with long polling (`WaitTimeSeconds` up to 20, longer waits loop) and up to 10 messages |
//! | lease | the visibility timeout (`VisibilityTimeout`, whole seconds, at most 12 h) |
//! | attempt | `ApproximateReceiveCount`, plus `x-queue-attempts-before` on a copy returned by a give-back |
//! | ack | `DeleteMessageBatch` (the worker batches acks), `Failed` entries reported |
//! | nack with delay | `ChangeMessageVisibility` to the delay (at most 12 h) |
//! | give back (handler never ran) | standard: a fresh copy with `x-queue-attempts-before` (the attempts so far), then `DeleteMessage`, so neither the attempt nor the receive count grows; FIFO: `ChangeMessageVisibility` (a copy would lose its place in its group), which counts a receive |
//! | extend | `ChangeMessageVisibility` to the new lease |
//! | delay | `DelaySeconds` up to 15 minutes; longer delays re-delay: the message carries its due time, and a receiver that sees it early sends it on with another delay of up to 15 minutes and deletes the early copy. Standard queues only: FIFO queues have no per-message delay, so a delayed send is refused |
//! | DLQ | the core writes dead letters with their reason to `Q-dlq`; the native redrive policy is the safety net for messages whose workers crash before settling them. Its dead letters carry no reason headers (SQS moves them as they are): a message in `Q-dlq` without `x-queue-dlq-reason` was moved by SQS after `maxReceiveCount` receives that never settled it. The worker refuses a retry policy with more attempts than `maxReceiveCount`, so the native move never pre-empts the worker's |
//! | ordering | FIFO: the ordering key is the `MessageGroupId` (a message without one gets its own group); standard: none, refused |
//! | dedup | FIFO: `MessageDeduplicationId` = the dedup id, else the message id (so a retried send is not duplicated); standard: refused |
//! | headers | one `x-queue-headers` message attribute (JSON), so SQS's limit of 10 attributes never applies; the framework id travels in `x-queue-id` |
//! | payload | the body when it is text SQS accepts; other bytes go in a binary attribute |
//! | peek | dead-letter queues only: `ReceiveMessage` with `VisibilityTimeout=0` (a look counts a receive, so main queues are refused) |
//! | stats | approximate: `ApproximateNumberOfMessages`, `…NotVisible`, `…Delayed`, and the DLQ's depth |
//! | redrive | the core's receive / send / delete loop (works on every SQS-compatible server; `StartMessageMoveTask` is not used) |
//! | purge | `PurgeQueue` (AWS allows one purge per queue every 60 s and takes up to 60 s to finish) |
//! | delete | `DeleteQueue` for `Q` and `Q-dlq` (AWS: a deleted name cannot be created again for 60 s) |
//!
//! With `?fifo=true` every queue is FIFO: the driver appends `.fifo` to the names you use
//! (`jobs` is `jobs.fifo`, its DLQ `jobs-dlq.fifo`), so the same code runs on both kinds.
//!
//! Every SQS request is counted by kind ([`SqsQueue::requests`], the total also through
//! `Backend::requests_made`, and the `metrics` counter `queue_sqs_requests_total{kind}`),
//! since on SQS every request is billed.
//!
//! ## URLs
//! `sqs://[KEY:SECRET@][REGION][?endpoint=URL&fifo=true&max_receive_count=25&max_message_size=1MiB]`.
//! `max_receive_count` is 1 to 1000 and `max_message_size` 1KiB to 1MiB (SQS's limits): a
//! value outside is an error that states the range, never clamped.
//!
//! Upgrading from 0.2: queues it created keep `maxReceiveCount` 10 (`create_queue` leaves
//! an existing queue's policy alone), while the worker now defaults to 25 attempts and
//! checks them against this URL's `max_receive_count` (25 by default). Raise the queues'
//! redrive policy to 25, or connect with `?max_receive_count=10` and give the worker a
//! retry policy of at most 10 attempts (it then refuses more); otherwise SQS moves a
//! message to the DLQ after 10 receives, without the worker's reason.
//!
//! ## What it cannot do
//! - Peek only dead-letter queues: SQS has no look without a receive, and a receive counts
//!   toward a main queue's `maxReceiveCount` (and the attempt count).
//! - Stats are approximate (SQS's own counts); a nacked message counts as in flight until
//!   its delay passes.
//! - Time has one-second resolution: leases, nack delays and waits are rounded up to whole
//!   seconds.
//! - Standard queues may deliver a message twice even when nothing failed (SQS's
//!   at-least-once); use the worker's idempotency layer for exactly-once effects.
//! - FIFO deduplication lasts 5 minutes (SQS's window), and FIFO queues accept no
//!   per-message delay.
//! - Leases and nack delays are at most 12 hours (SQS's visibility timeout); a longer one
//!   is refused, not shortened.
//! - A stale receipt handle (one from before the message was received again) may be
//!   accepted by AWS without effect or refused, depending on the server: AWS documents
//!   that deleting with an old handle "succeeds, but the message might not be deleted".
#![warn(missing_docs, missing_debug_implementations)]
// Without `client` only the decoder is used (by the fuzz targets).
#![cfg_attr(not(feature = "client"), allow(dead_code))]
//!
//! ## Features
//! - `client` (default): the driver itself, on the AWS SDK. Without it the crate holds only
//!   the message codec, for the fuzz targets (feature `fuzzing`), which then build without
//!   the AWS SDK.

mod codec;
#[cfg(feature = "client")]
mod driver;
#[cfg(feature = "client")]
pub use driver::{register, RequestCounts, SqsConfig, SqsQueue};

const BACKEND: &str = "sqs";

// The fuzz targets' entry points (`fuzz/`); documented in the module.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
