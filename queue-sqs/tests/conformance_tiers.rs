//! Priorities emulated as tier queues ([`queue_core::tiers`]) over a standard SQS queue
//! (moto): the kit's cases that go through every path of the wrapper (send by tier,
//! receive highest first and the long poll over all tiers, receipts that carry their
//! tier, dead letters, redrive, stats, purge and delete over every tier).

mod common;

fn harness() -> queue_core::testkit::Harness {
    common::harness(common::KIT_STANDARD).priority_tiers(4)
}

queue_core::conformance_cases!(harness;
    round_trip batch_round_trip receive_respects_max empty_receive_waits
    shutdown_cuts_long_poll nack_redelivers_after_delay extend_keeps_hidden
    stale_receipt_refused give_back_keeps_attempt dlq_after_max_attempts
    redrive_returns_messages native_dlq_moves_poison priority_honoured stats_agree
    delete_and_purge crash_mid_job_loses_nothing);
