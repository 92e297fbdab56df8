//! What applications hold: [`Backend`](handle::Backend) and
//! [`Queue`](handle::Queue) handles, producers, jobs, the worker (receive loop, dispatch,
//! retries, dead-lettering, shutdown), retry policies, idempotency and trace propagation.

pub(crate) mod handle;
pub mod idempotency;
pub(crate) mod inspect;
pub mod job;
pub(crate) mod producer;
pub mod retry;
pub(crate) mod trace;
pub(crate) mod worker;
