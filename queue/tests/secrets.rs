//! A password, token or AWS secret key given in a URL never shows in `Debug` output, in an
//! error's `Display` or `Debug`, in `WorkerHandle::last_error`, or in the logs, for every
//! bundled backend: connect with secrets against unreachable servers (and with a bad
//! option, for the URL errors), use the handles, run a worker that keeps failing, and
//! search everything that was printed.
#![cfg(all(feature = "redis", feature = "sqs", feature = "kafka"))]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::{Delivery, Message};

const REDIS_PW: &str = "redis-pw-7f3a1";
const AWS_SECRET: &str = "aws-secret-9c1d2";
const KAFKA_PW: &str = "kafka-pw-2b8e3";

/// Collects everything the tracing subscriber writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_show_in_debug_errors_or_logs() {
    let logs = Logs::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish(),
    )
    .expect("the only subscriber of this test binary");
    // Port 1 on loopback: nothing listens, every operation fails.
    let urls = [
        format!("redis://app:{REDIS_PW}@127.0.0.1:1/0"),
        format!("redis://app:{REDIS_PW}@127.0.0.1:1/0?bogus=1"),
        // The test Redis (scripts/services.sh) has no password: a wrong-credentials error.
        format!("redis://app:{REDIS_PW}@127.0.0.1:6379/0"),
        format!("sqs://AKIAEXAMPLE:{AWS_SECRET}@us-east-1?endpoint=http://127.0.0.1:1"),
        format!("sqs://AKIAEXAMPLE:{AWS_SECRET}@us-east-1?endpoint=http://127.0.0.1:1&bogus=1"),
        format!(
            "kafka://127.0.0.1:1?security.protocol=SASL_PLAINTEXT&sasl.mechanism=PLAIN\
             &sasl.username=app&sasl.password={KAFKA_PW}"
        ),
        format!("kafka://127.0.0.1:1?sasl.password={KAFKA_PW}&bogus=1"),
    ];
    let mut seen = String::new();
    let (mut errors, mut handles) = (0, 0);
    for url in &urls {
        let backend = match queue::connect(url).await {
            Ok(b) => b,
            Err(e) => {
                errors += 1;
                seen += &format!("{e}\n{e:?}\n");
                continue;
            }
        };
        handles += 1;
        let q = backend.queue("secrets");
        seen += &format!("{backend:?}\n{q:?}\n");
        match tokio::time::timeout(Duration::from_secs(15), q.send(Message::new("x"))).await {
            Ok(Ok(_)) => panic!("a send to an unreachable server returned Ok ({url:?} redacted?)"),
            Ok(Err(e)) => {
                errors += 1;
                seen += &format!("{e}\n{e:?}\n");
            }
            Err(_) => {} // still retrying (Kafka's producer): nothing to print
        }
        let worker = q
            .worker()
            .poll_wait(Duration::from_millis(100))
            .handle_raw(|_d: Delivery| async { Ok(()) })
            .start()
            .expect("valid settings");
        tokio::time::sleep(Duration::from_secs(2)).await;
        seen += &format!("{worker:?}\n{:?}\n", worker.last_error());
        worker.abort();
    }
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for secret in [REDIS_PW, AWS_SECRET, KAFKA_PW] {
        assert!(!seen.contains(secret), "{secret} shown:\n{seen}");
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
    // The test did exercise what it searches: the bad options, the refused connections and
    // credentials failed, a handle printed (Redis and Kafka connect eagerly, so only SQS
    // gets as far), and the failing worker logged.
    assert!(errors >= 7, "want every URL to end in an error:\n{seen}");
    assert!(seen.matches("bogus").count() >= 3, "{seen}");
    assert!(handles >= 1, "{seen}");
    assert!(
        logs.contains("failed"),
        "the failing workers logged nothing:\n{logs}"
    );
}
