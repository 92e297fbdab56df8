//! The dashboard in a real headless browser (Debian's chromium, driven through
//! chromedriver by fantoccini), served by the `queuectl serve` binary over a real Redis
//! with real dead letters: the test reads what a person would see, redrives one reason
//! with a click, and keeps screenshots in the target directory
//! (`queuectl-dashboard-*.png`). `scripts/services.sh` installs chromium and chromedriver.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
mod common;

use common::Charge;

const REDIS: &str = "redis://127.0.0.1:6379";

/// Kills the child process when the test ends, passed or not.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until_up(port: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn which(name: &str, default: &str) -> String {
    let path = std::env::var(name).unwrap_or_else(|_| default.to_string());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: run scripts/services.sh (it installs chromium and chromium-driver)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() {
    let chromium = which("CHROMIUM", "/usr/bin/chromium");
    let chromedriver = which("CHROMEDRIVER", "/usr/bin/chromedriver");

    // A queue with two dead letters (two reasons), one job done and one waiting.
    let backend = queue::connect(REDIS).await.expect("redis up");
    let name = queue::testkit::unique("browser");
    let q = backend.queue(name.clone());
    q.create().await.unwrap();
    for n in 1..=3 {
        q.enqueue(&Charge { n }).await.unwrap();
    }
    common::work_charges(&q, 2, 1).await;
    q.enqueue(&Charge { n: 4 }).await.unwrap();
    // A batch of two jobs, open, its state in the same Redis.
    let store = queue::connect_store(REDIS).await.expect("redis up");
    let batch = backend
        .clone()
        .with_store(store)
        .new_batch()
        .description("browser batch")
        .open()
        .await
        .unwrap();
    let jobs = backend.queue(format!("{name}-batch"));
    jobs.create().await.unwrap();
    let two = vec![queue::Message::new("a"), queue::Message::new("b")];
    batch.add_messages(jobs.name(), two).await.unwrap();

    let port = free_port();
    let _dash = Killed(
        Command::new(env!("CARGO_BIN_EXE_queuectl"))
            .args(["serve", &name, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--status-url", REDIS])
            .env("QUEUE_URL", REDIS)
            .env_remove("QUEUECTL_TOKEN")
            .stdout(Stdio::null())
            .spawn()
            .expect("queuectl serve starts"),
    );
    let driver_port = free_port();
    let _driver = Killed(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    until_up(port, "queuectl serve").await;
    until_up(driver_port, "chromedriver").await;

    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800"]
        }
    });
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a browser session");
    let base = format!("http://127.0.0.1:{port}");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));

    let result = async {
        // The overview: our queue (so this is our server) with its depths.
        c.goto(&format!("{base}/")).await?;
        let row = c
            .find(Locator::Css(&format!(r#"tr[data-queue="{name}"]"#)))
            .await?;
        let cells: Vec<String> = {
            let mut v = Vec::new();
            for td in row.find_all(Locator::Css("td.n")).await? {
                v.push(td.text().await?);
            }
            v
        };
        assert_eq!(
            cells[..4],
            ["1", "0", "0", "2"],
            "ready, in flight, delayed, dead"
        );

        // Into the queue: the dead letters with their reasons and errors.
        row.find(Locator::Css("a")).await?.click().await?;
        let table = c.wait().for_element(Locator::Id("dead-letters")).await?;
        let text = table.text().await?;
        for want in [
            "permanent",
            "card declined",
            "max-attempts",
            "bank timed out",
        ] {
            assert!(
                text.contains(want),
                "the dead letters show {want:?}: {text}"
            );
        }
        std::fs::write(
            shots.join("queuectl-dashboard-queue.png"),
            c.screenshot().await?,
        )
        .unwrap();

        // Redrive the permanent one: reason, confirmation box, click.
        let form = c.find(Locator::Id("redrive")).await?;
        form.find(Locator::Css("select[name=reason]"))
            .await?
            .select_by_value("permanent")
            .await?;
        form.find(Locator::Css("input[name=confirm]"))
            .await?
            .click()
            .await?;
        form.find(Locator::Css("button")).await?.click().await?;
        let flash = c.wait().for_element(Locator::Css("p.flash")).await?;
        assert_eq!(flash.text().await?, "Redrove 1 dead letter(s).");
        let rows = c.find_all(Locator::Css("#dead-letters tr")).await?;
        assert_eq!(rows.len(), 2, "a header and the one dead letter left");
        let left = c.find(Locator::Id("dead-letters")).await?.text().await?;
        assert!(
            left.contains("max-attempts") && !left.contains("card declined"),
            "{left}"
        );
        std::fs::write(
            shots.join("queuectl-dashboard-redriven.png"),
            c.screenshot().await?,
        )
        .unwrap();

        // A batch, looked up from the header's form: its counts and bar.
        let form = c.find(Locator::Css(r#"form[action="/batches"]"#)).await?;
        form.find(Locator::Css("input[name=id]"))
            .await?
            .send_keys(batch.id())
            .await?;
        form.find(Locator::Css("button")).await?.click().await?;
        let counts = c.wait().for_element(Locator::Id("batch-counts")).await?;
        let text = counts.text().await?;
        assert!(
            text.contains("total 2") && text.contains("pending 2") && text.contains("open"),
            "{text}"
        );
        c.find(Locator::Id("batch-bar")).await?;
        std::fs::write(
            shots.join("queuectl-dashboard-batch.png"),
            c.screenshot().await?,
        )
        .unwrap();
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    result.expect("browser steps");

    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.ready, s.dead),
        (2, 1),
        "the click moved exactly one dead letter"
    );
    q.delete().await.ok();
    jobs.delete().await.ok();
}
