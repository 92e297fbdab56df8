//! One trace from enqueue to handler on every backend (feature `otel`): the request span
//! that enqueued a job is the parent of the worker's `job` span, and a span the handler
//! opens is the job span's child. Spans are collected by OpenTelemetry's in-memory
//! exporter; the backends are the real servers `scripts/services.sh` starts.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use queue::JobContext;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[derive(serde::Serialize, serde::Deserialize)]
struct Charge {
    n: u32,
}
impl queue::Job for Charge {
    const NAME: &'static str = "charge";
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

async fn one_trace(url: &str) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("queue-trace-test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let backend = queue::connect(url).await.expect("backend up");
    let q = backend.queue(queue::testkit::unique("trace"));
    q.create().await.unwrap();
    async {
        q.enqueue(&Charge { n: 1 }).await.unwrap();
    }
    .instrument(tracing::info_span!("http_request"))
    .await;
    let w = q
        .worker()
        .poll_wait(Duration::from_secs(1))
        .handle(|_: Charge, _: JobContext| async {
            tracing::info_span!("charge_card").in_scope(|| ());
            Ok(())
        })
        .start()
        .unwrap();
    queue::testkit::eventually_worker(&w, Duration::from_secs(60), "the job ran", |r| {
        r.succeeded == 1
    })
    .await;
    w.shutdown().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let request = named(&spans, "http_request");
    let job = named(&spans, "job");
    let charge = named(&spans, "charge_card");
    assert_eq!(
        (request.len(), job.len(), charge.len()),
        (1, 1, 1),
        "{spans:#?}"
    );
    let (request, job, charge) = (request[0], job[0], charge[0]);
    let trace = request.span_context.trace_id();
    assert_eq!(
        job.span_context.trace_id(),
        trace,
        "{url}: the job continues the request's trace"
    );
    assert_eq!(
        job.parent_span_id,
        request.span_context.span_id(),
        "{url}: enqueued under the request"
    );
    assert_eq!(charge.span_context.trace_id(), trace);
    assert_eq!(
        charge.parent_span_id,
        job.span_context.span_id(),
        "the handler's span is the job's child"
    );
    q.delete().await.ok();
}

#[tokio::test]
async fn memory() {
    one_trace("memory://").await;
}

#[tokio::test]
async fn redis() {
    one_trace("redis://127.0.0.1:6379").await;
}

#[tokio::test]
async fn sqs() {
    one_trace("sqs://test:test@us-east-1?endpoint=http://127.0.0.1:4566").await;
}

#[tokio::test]
async fn kafka() {
    one_trace("kafka://127.0.0.1:9092").await;
}
