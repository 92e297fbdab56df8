//! Traces from producer to consumer (feature `otel`): W3C Trace Context in the message's
//! headers (`traceparent`, `tracestate`).
//!
//! On send, the OpenTelemetry context of the current `tracing` span (through
//! `tracing-opentelemetry`) is written into each message's headers by the globally set
//! propagator, unless the message carries a `traceparent` already. In the worker, each
//! job's `job` span takes the context in its delivery's headers as its parent, so the
//! request that enqueued a job and the handler that ran it are one trace, on every backend
//! (the headers travel like any other). Retries, dead letters and redrives keep the
//! headers, so they stay in the trace too.
//!
//! The application sets up OpenTelemetry as usual: a `tracing-opentelemetry` layer on its
//! subscriber, and the W3C propagator
//! (`opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())`, from
//! `opentelemetry_sdk`). Without a propagator set, OpenTelemetry's default propagates
//! nothing, and nothing is written. Without the feature, none of this is compiled.

#[cfg(feature = "otel")]
mod imp {
    use opentelemetry::propagation::{Extractor, Injector};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::message::Headers;

    struct Inject<'a>(&'a mut Headers);
    impl Injector for Inject<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
    }

    struct Extract<'a>(&'a Headers);
    impl Extractor for Extract<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }

    /// Writes the current span's trace context into `headers`, unless they carry one.
    pub(crate) fn inject(headers: &mut Headers) {
        if headers.contains_key("traceparent") {
            return;
        }
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut Inject(headers))
        });
    }

    /// Makes `span` continue the trace whose context `headers` carry, if any.
    pub(crate) fn continue_trace(span: &tracing::Span, headers: &Headers) {
        if !headers.contains_key("traceparent") {
            return;
        }
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)));
        let _ = span.set_parent(cx);
    }
}

#[cfg(not(feature = "otel"))]
mod imp {
    use crate::message::Headers;

    #[inline]
    pub(crate) fn inject(_: &mut Headers) {}

    #[inline]
    pub(crate) fn continue_trace(_: &tracing::Span, _: &Headers) {}
}

pub(crate) use imp::{continue_trace, inject};
