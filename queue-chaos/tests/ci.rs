//! The CI-sized fault runs, part of `scripts/test.sh`: every fault kind on every backend it
//! applies to, small enough to finish in a few minutes, each run by the `queue-chaos`
//! binary against the servers `scripts/services.sh up` starts (the restart and Kafka
//! network runs start their own broker on a free port). A run fails when anything accepted
//! was lost, a worker died, recovery from a network fault took over 10 s, or 1 % poison
//! cost more than a tenth of the healthy throughput. The full-size runs and their figures
//! are in docs/reliability.md.
//!
//! One test per fault kind, run one after another (they share two cores with the workers
//! they start).

use std::process::Command;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn chaos(args: &[&str]) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_queue-chaos"))
        .args(args)
        .output()
        .expect("run queue-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "queue-chaos {args:?} failed ({}):\n{stdout}\n--- stderr (last 4000 bytes) ---\n{}",
        out.status,
        &stderr[stderr.len().saturating_sub(4000)..]
    );
    println!("{stdout}");
    stdout
}

#[test]
fn worker_crashes_lose_nothing() {
    chaos(&[
        "crash",
        "--backends",
        "redis",
        "--jobs",
        "20000",
        "--kills",
        "4",
        "--interval",
        "2",
    ]);
    chaos(&[
        "crash",
        "--backends",
        "redis",
        "--jobs",
        "5000",
        "--kills",
        "3",
        "--interval",
        "2",
        "--idempotency",
    ]);
    chaos(&[
        "crash",
        "--backends",
        "sqs",
        "--jobs",
        "600",
        "--kills",
        "3",
        "--interval",
        "3",
    ]);
    // Kafka's crash run is not here: tansu, the only Kafka broker this project can
    // install, sometimes leaves a killed worker's partition assigned to that dead member
    // (docs/reliability.md, "The Kafka crash run and tansu"), so the run would fail about
    // half the time for the broker's reason. It runs in the full harness,
    // `queue-chaos crash --backends kafka`.
}

#[test]
fn broker_restarts_lose_nothing() {
    chaos(&[
        "restart",
        "--backends",
        "redis,cluster,kafka",
        "--jobs",
        "3000",
        "--restarts",
        "2",
        "--interval",
        "4",
        "--down",
        "2",
    ]);
}

#[test]
fn network_faults_lose_nothing_and_recover_within_10_s() {
    chaos(&[
        "network",
        "--backends",
        "redis,sqs,kafka",
        "--jobs",
        "1500",
        "--gap",
        "3",
        "--fault",
        "4",
    ]);
}

#[test]
fn poison_is_dead_lettered_and_costs_little() {
    chaos(&["poison", "--backends", "redis", "--jobs", "20000"]);
    // moto slows down with many unread messages: a smaller queue there. Kafka's poison run
    // is left to the full harness for now: on the machine of 2026-11-30 tansu stopped
    // serving the poisoned drain at 5,000 jobs (no fetch for four minutes, three runs of
    // three, with this session's code and with the code before it), and at 2,500 the
    // drains last a second, too short for the 10 % throughput rule (ratios 0.82 to 1.25
    // between runs). Hostile Kafka records stay covered by queue-kafka/tests/foreign.rs
    // and the kafka_record fuzz target; docs/reliability.md has the figures.
    chaos(&["poison", "--backends", "sqs", "--jobs", "1000"]);
}

/// The harness itself can fail: workers that ack every 50th job without running it lose
/// jobs, and the run must say so (exit status 1, the lost jobs counted).
#[test]
fn a_worker_that_drops_jobs_fails_the_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_queue-chaos"))
        .args([
            "crash",
            "--backends",
            "redis",
            "--jobs",
            "1000",
            "--kills",
            "1",
            "--interval",
            "1",
            "--sabotage-every",
            "50",
            "--drain-timeout",
            "15",
        ])
        .output()
        .expect("run queue-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a lossy run must fail:\n{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| redis"))
        .expect("a result row");
    let lost: u64 = row
        .split('|')
        .nth(8)
        .unwrap()
        .trim()
        .trim_matches('*')
        .parse()
        .unwrap();
    assert!(
        lost >= 15,
        "about 20 of 1000 dropped, counted as lost: {row}"
    );
}
