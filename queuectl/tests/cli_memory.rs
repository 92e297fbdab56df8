//! Every subcommand through `queuectl::cli::run`, in this process, on the in-memory backend
//! (`memory://NAME` is shared by every connection of one process) with a memory status
//! store attached the way an application embeds the tool.

mod common;

use clap::Parser;
use queuectl::cli::{self, Cli};
use queuectl::CliError;
use serde_json::Value;

async fn run(url: &str, args: &[&str]) -> Result<String, CliError> {
    let mut argv = vec!["queuectl", "--url", url];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut out = Vec::new();
    cli::run(cli, &mut out).await?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

async fn json(url: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = run(url, &a)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed {out:?}: {e}"))
}

fn code(r: Result<String, CliError>) -> u8 {
    match r {
        Ok(out) => panic!("want an error, got output {out:?}"),
        Err(e) => e.exit_code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_on_memory() {
    let url = "memory://queuectl-cli";
    let backend = queue::connect(url).await.unwrap();
    let q = backend.queue("payments");
    q.create().await.unwrap();

    // send: plain JSON and a typed job; bad JSON and unknown queues change nothing.
    let mut ids = Vec::new();
    for n in 1..=3 {
        let j = format!(r#"{{"n":{n}}}"#);
        let sent = json(url, &["send", "payments", "--json", &j, "--job", "charge"]).await;
        ids.push(sent["id"].as_str().expect("an id").to_string());
    }
    assert_eq!(
        code(run(url, &["send", "payments", "--json", "{nope"]).await),
        2
    );
    assert_eq!(code(run(url, &["send", "nosuch", "--json", "{}"]).await), 4);
    let s = json(url, &["stats", "payments"]).await;
    assert_eq!(s[0]["ready"], 3, "{s}");
    assert_eq!(code(run(url, &["stats", "nosuch"]).await), 4);
    let watched = run(
        url,
        &[
            "stats",
            "payments",
            "--watch",
            "--interval",
            "10ms",
            "--times",
            "3",
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        watched.matches("QUEUE").count(),
        3,
        "three refreshes: {watched}"
    );

    // peek: in order, nothing taken.
    let p = json(url, &["peek", "payments", "-n", "2"]).await;
    let seen: Vec<&str> = p
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!(json(url, &["stats", "payments"]).await[0]["ready"], 3);

    // Three jobs: one permanent failure, one out of attempts, one done.
    common::work_charges(&q, 2, 1).await;

    // dlq list / show
    let d = json(url, &["dlq", "list", "payments"]).await;
    let mut reasons: Vec<(String, String)> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().into(),
                m["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    reasons.sort_by_key(|(id, _)| ids.iter().position(|i| i == id));
    assert_eq!(
        reasons,
        [
            (ids[0].clone(), "permanent".into()),
            (ids[1].clone(), "max-attempts".into())
        ]
    );
    let table = run(url, &["dlq", "list", "payments"]).await.unwrap();
    assert!(
        table.starts_with("ID") && table.contains("card declined"),
        "{table}"
    );
    let one = run(url, &["dlq", "show", "payments", &ids[0]])
        .await
        .unwrap();
    assert!(
        one.contains("reason:") && one.contains("permanent") && one.contains(r#""n":1"#),
        "{one}"
    );
    assert_eq!(
        code(run(url, &["dlq", "show", "payments", "no-such-id"]).await),
        4
    );

    // redrive by reason moves only the permanent one.
    let r = json(url, &["redrive", "payments", "--reason", "permanent"]).await;
    assert_eq!(r["redriven"], 1, "{r}");
    let s = json(url, &["stats", "payments"]).await;
    assert_eq!(
        (s[0]["ready"].as_u64(), s[0]["dead"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );

    // purge: refused without --yes when not at a terminal, then done with it.
    assert_eq!(code(run(url, &["purge", "payments"]).await), 5);
    assert_eq!(
        json(url, &["stats", "payments"]).await[0]["ready"],
        1,
        "nothing purged"
    );
    json(url, &["purge", "payments", "--yes"]).await;
    json(url, &["purge", "payments", "--dlq", "--yes"]).await;
    let s = json(url, &["stats", "payments"]).await;
    assert_eq!(
        (s[0]["ready"].as_u64(), s[0]["dead"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );

    // pause / resume / job need the status store: a clear usage error without one.
    assert_eq!(code(run(url, &["pause", "payments"]).await), 2);
    assert_eq!(code(run(url, &["job", &ids[0]]).await), 2);
    // Bad URL and bad durations are usage errors.
    assert_eq!(code(run("nosuch://x", &["stats", "payments"]).await), 2);
    assert_eq!(
        code(
            run(
                url,
                &["send", "payments", "--json", "{}", "--delay", "soon"]
            )
            .await
        ),
        2
    );
}
