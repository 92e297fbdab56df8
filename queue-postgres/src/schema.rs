//! The queue's tables, created and migrated on connect, versioned in
//! `<schema>.schema_version`.
//!
//! Each version is a list of statements applied once, in order, inside one transaction
//! under an advisory lock (so that processes starting together do not race, and a failed
//! migration leaves the previous version intact). A schema at a version newer than
//! [`VERSION`] was written by a newer driver: it is refused, never downgraded.

use queue_core::{QueueError, Result};
use tokio_postgres::Client;

use crate::{map_err, BACKEND};

/// The schema version this driver writes and reads.
pub(crate) const VERSION: i32 = 1;

/// The advisory lock taken while creating or migrating (any fixed number: it names the
/// lock across processes; the same one the store takes, since both create the schema).
const LOCK: i64 = 7_253_010_411;

/// The notification channel of `schema`: its name carries the schema so that two
/// schemas in one database do not wake each other's workers.
pub(crate) fn channel(schema: &str) -> String {
    format!("queue_{schema}")
}

/// Version 1: queues, messages, dedup marks, the insert trigger that notifies.
fn v1(s: &str) -> String {
    let chan = channel(s);
    format!(
        r#"
        CREATE TABLE "{s}".queues (
            name text PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE "{s}".messages (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            queue text NOT NULL REFERENCES "{s}".queues (name) ON DELETE CASCADE,
            id text NOT NULL,
            payload bytea NOT NULL,
            headers jsonb NOT NULL,
            okey text,
            priority smallint NOT NULL DEFAULT 0,
            enqueued_at timestamptz NOT NULL,
            visible_at timestamptz NOT NULL,
            leased boolean NOT NULL DEFAULT false,
            attempt integer NOT NULL DEFAULT 0,
            generation bigint NOT NULL DEFAULT 0);
        CREATE INDEX messages_next ON "{s}".messages (queue, priority DESC, seq);
        CREATE INDEX messages_due ON "{s}".messages (queue, visible_at);
        CREATE INDEX messages_key ON "{s}".messages (queue, okey, seq) WHERE okey IS NOT NULL;
        CREATE TABLE "{s}".dedup (
            queue text NOT NULL REFERENCES "{s}".queues (name) ON DELETE CASCADE,
            dedup_id text NOT NULL,
            id text NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (queue, dedup_id));
        CREATE FUNCTION "{s}".notify_sent() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{chan}', q) FROM (SELECT DISTINCT queue AS q FROM sent) t;
            RETURN NULL;
        END $$;
        CREATE TRIGGER messages_sent AFTER INSERT ON "{s}".messages
            REFERENCING NEW TABLE AS sent
            FOR EACH STATEMENT EXECUTE FUNCTION "{s}".notify_sent();
        "#
    )
}

/// Creates the schema's tables, or migrates them to [`VERSION`]; refuses a newer one.
pub(crate) async fn ensure(client: &mut Client, s: &str) -> Result<()> {
    let tx = client.transaction().await.map_err(map_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(map_err)?;
    tx.batch_execute(&format!(
        r#"CREATE SCHEMA IF NOT EXISTS "{s}";
           CREATE TABLE IF NOT EXISTS "{s}".schema_version (
               version integer NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now());"#
    ))
    .await
    .map_err(map_err)?;
    let row = tx
        .query_one(
            &format!(r#"SELECT coalesce(max(version), 0) FROM "{s}".schema_version"#),
            &[],
        )
        .await
        .map_err(map_err)?;
    let found: i32 = row.get(0);
    if found > VERSION {
        return Err(QueueError::Schema {
            backend: BACKEND,
            schema: s.to_string(),
            reason: format!(
                "version {found} was written by a newer queue-postgres (this one reads \
                 version {VERSION}): upgrade this program, or use another schema (?schema=)"
            ),
        });
    }
    if found == 0 {
        let there: bool = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!(r#""{s}".messages"#)],
            )
            .await
            .map_err(map_err)?
            .get(0);
        if there {
            return Err(QueueError::Schema {
                backend: BACKEND,
                schema: s.to_string(),
                reason: "its tables are there but its schema_version record is gone: \
                         restore the record, or drop the schema to start afresh"
                    .into(),
            });
        }
    }
    let steps: [fn(&str) -> String; 1] = [v1];
    for (i, step) in steps.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= found {
            continue;
        }
        tx.batch_execute(&step(s)).await.map_err(map_err)?;
        tx.execute(
            &format!(r#"INSERT INTO "{s}".schema_version (version) VALUES ($1)"#),
            &[&version],
        )
        .await
        .map_err(map_err)?;
        tracing::info!(schema = s, version, "postgres queue schema migrated");
    }
    // A table dropped by hand: refuse, rather than recreate it empty under a version that
    // says the schema is whole.
    for table in ["queues", "messages", "dedup"] {
        let there: bool = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!(r#""{s}".{table}"#)],
            )
            .await
            .map_err(map_err)?
            .get(0);
        if !there {
            return Err(missing(s, table));
        }
    }
    tx.commit().await.map_err(map_err)?;
    Ok(())
}

/// The error for a table of `schema` that is gone.
pub(crate) fn missing(schema: &str, what: &str) -> QueueError {
    QueueError::Schema {
        backend: BACKEND,
        schema: schema.to_string(),
        reason: format!(
            "{what} is missing (dropped by hand?): restore it from a backup, or drop the \
             schema (DROP SCHEMA \"{schema}\" CASCADE: every queue in it is lost) and \
             connect again to start afresh"
        ),
    }
}
