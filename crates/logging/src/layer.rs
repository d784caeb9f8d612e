//! The structured layer behind the JSON and journal formats: it keeps every span's fields, and
//! turns each event into one flat [`Record`] (the event's fields over its spans' fields, innermost
//! first) that a [`Sink`] writes.

use std::fmt;
use std::io::Write;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::SET_ID;

/// A field's value, with the type it was recorded with (JSON keeps numbers and booleans).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(value) => f.write_str(value),
            Value::I64(value) => write!(f, "{value}"),
            Value::U64(value) => write!(f, "{value}"),
            Value::F64(value) => write!(f, "{value}"),
            Value::Bool(value) => write!(f, "{value}"),
        }
    }
}

impl Value {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(value) => serde_json::Value::from(value.as_str()),
            Value::I64(value) => serde_json::Value::from(*value),
            Value::U64(value) => serde_json::Value::from(*value),
            Value::F64(value) => serde_json::Value::from(*value),
            Value::Bool(value) => serde_json::Value::from(*value),
        }
    }
}

/// One event, flattened: what a [`Sink`] writes.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) level: Level,
    pub(crate) target: &'a str,
    pub(crate) file: Option<&'a str>,
    pub(crate) line: Option<u32>,
    pub(crate) message: String,
    /// Span fields from the outermost span in, then the event's; a later one with the same key
    /// has replaced the earlier. The set's id is under [`SET_ID`].
    pub(crate) fields: Vec<(String, Value)>,
    /// The span names from the outermost, joined with `:`.
    pub(crate) spans: String,
}

impl Record<'_> {
    /// The record as one line of text: `LEVEL message key=value ...`, for a sink's fallback.
    pub(crate) fn text(&self) -> String {
        let mut line = format!("{} {}", self.level, self.message);
        for (key, value) in &self.fields {
            line.push_str(&format!(" {key}={value}"));
        }
        line
    }
}

/// Where records go.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Writes one record; never fails the program (a sink that cannot write falls back or drops).
    fn write(&self, record: &Record<'_>);
}

/// The JSON-lines sink: one object per record on stderr.
pub(crate) struct JsonSink {
    pub(crate) program: &'static str,
}

/// Keys of a JSON record that fields may not take; a field of such a name becomes `field_<name>`.
const RESERVED: [&str; 6] = [
    "timestamp",
    "level",
    "program",
    "target",
    "message",
    "spans",
];

impl JsonSink {
    pub(crate) fn line(&self, record: &Record<'_>) -> String {
        let mut timestamp = String::new();
        let _ = tracing_subscriber::fmt::time::FormatTime::format_time(
            &tracing_subscriber::fmt::time::SystemTime,
            &mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp),
        );
        // Written by hand rather than through a map, so that the fixed keys come first and the
        // fields keep their order.
        let mut line = String::from("{");
        let mut put = |key: &str, value: serde_json::Value| {
            if line.len() > 1 {
                line.push(',');
            }
            line.push_str(&serde_json::Value::from(key).to_string());
            line.push(':');
            line.push_str(&value.to_string());
        };
        put("timestamp", timestamp.into());
        put("level", record.level.as_str().into());
        put("program", self.program.into());
        put("target", record.target.into());
        put("message", record.message.as_str().into());
        for (key, value) in &record.fields {
            if RESERVED.contains(&key.as_str()) {
                put(&format!("field_{key}"), value.to_json());
            } else {
                put(key, value.to_json());
            }
        }
        if !record.spans.is_empty() {
            put("spans", record.spans.as_str().into());
        }
        line.push('}');
        line
    }
}

impl Sink for JsonSink {
    fn write(&self, record: &Record<'_>) {
        let mut line = self.line(record);
        line.push('\n');
        // One write per line, so that lines of concurrent threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Every field of one span, in the order recorded.
#[derive(Debug, Default)]
struct SpanFields(Vec<(&'static str, Value)>);

/// Collects fields, and the event's message apart.
struct Collector<'a> {
    fields: &'a mut Vec<(&'static str, Value)>,
    message: Option<&'a mut String>,
}

impl Collector<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        // A `log` record's target, file and line travel as `log.*` fields; they are taken from
        // the normalized metadata instead.
        if field.name().starts_with("log.") {
            return;
        }
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            *message = value.to_string();
            return;
        }
        match self.fields.iter_mut().find(|(key, _)| *key == field.name()) {
            Some((_, old)) => *old = value,
            None => self.fields.push((field.name(), value)),
        }
    }
}

impl Visit for Collector<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here too, wrapped so that Debug prints their Display.
        self.put(field, Value::Str(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::U64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Str(value.to_string()));
    }
}

/// The name a field is written under: the set's id is `set` in the coordinator's and the SDK's
/// spans and [`SET_ID`] in records.
fn canonical(key: &str) -> &str {
    match key {
        "set" => SET_ID,
        other => other,
    }
}

/// Adds `key = value` to `fields`, replacing an earlier value of the same key. An empty string
/// carries nothing and replaces nothing: the SDK's event span says `set=""` outside a set, which
/// must not hide the set of an enclosing span.
fn merge(fields: &mut Vec<(String, Value)>, key: &str, value: &Value) {
    if matches!(value, Value::Str(text) if text.is_empty()) {
        return;
    }
    let key = canonical(key);
    match fields.iter_mut().find(|(old, _)| old == key) {
        Some((_, old)) => *old = value.clone(),
        None => fields.push((key.to_owned(), value.clone())),
    }
}

/// The `tracing` layer of the JSON and journal formats.
pub(crate) struct StructuredLayer<K: Sink> {
    sink: Arc<K>,
}

impl<K: Sink> StructuredLayer<K> {
    pub(crate) fn new(sink: Arc<K>) -> Self {
        StructuredLayer { sink }
    }
}

impl<S, K> Layer<S> for StructuredLayer<K>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    K: Sink,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = SpanFields::default();
        attrs.record(&mut Collector {
            fields: &mut fields.0,
            message: None,
        });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collector {
                fields: &mut fields.0,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        let mut spans = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if !spans.is_empty() {
                    spans.push(':');
                }
                spans.push_str(span.name());
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    for (key, value) in &span_fields.0 {
                        merge(&mut fields, key, value);
                    }
                }
            }
        }
        let mut message = String::new();
        let mut own = Vec::new();
        event.record(&mut Collector {
            fields: &mut own,
            message: Some(&mut message),
        });
        for (key, value) in &own {
            merge(&mut fields, key, value);
        }
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        self.sink.write(&Record {
            level: *metadata.level(),
            target: metadata.target(),
            file: metadata.file(),
            line: metadata.line(),
            message,
            fields,
            spans,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Keeps what it is given, as JSON lines.
    #[derive(Default)]
    struct Kept(Mutex<Vec<serde_json::Value>>);

    impl Sink for Kept {
        fn write(&self, record: &Record<'_>) {
            let line = JsonSink { program: "test" }.line(record);
            self.0
                .lock()
                .unwrap()
                .push(serde_json::from_str(&line).expect("a JSON line"));
        }
    }

    fn records(body: impl FnOnce()) -> Vec<serde_json::Value> {
        let kept = Arc::new(Kept::default());
        let subscriber =
            tracing_subscriber::registry().with(StructuredLayer::new(Arc::clone(&kept)));
        tracing::subscriber::with_default(subscriber, body);
        kept.0.lock().unwrap().clone()
    }

    #[test]
    fn span_fields_are_flat_with_the_set_as_set_id() {
        let records = records(|| {
            let set = tracing::info_span!("snapshot_set", set = "3f2c", volumes = 2_u64);
            let _set = set.enter();
            let phase = tracing::info_span!("phase", phase = "freeze");
            let _phase = phase.enter();
            // The SDK's event span outside a set says set = "": it must not hide the set.
            let event = tracing::info_span!("writer_event", writer = "pg", set = "");
            let _event = event.enter();
            tracing::warn!(code = "VSS_E_WRITERERROR_TIMEOUT", late = true, "no answer");
        });
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record["level"], "WARN");
        assert_eq!(record["program"], "test");
        assert_eq!(record["message"], "no answer");
        assert_eq!(record["set_id"], "3f2c");
        assert_eq!(record["writer"], "pg");
        assert_eq!(record["phase"], "freeze");
        assert_eq!(record["volumes"], 2);
        assert_eq!(record["late"], true);
        assert_eq!(record["code"], "VSS_E_WRITERERROR_TIMEOUT");
        assert_eq!(record["spans"], "snapshot_set:phase:writer_event");
        assert!(
            record["timestamp"].as_str().unwrap().ends_with('Z'),
            "{record}"
        );
        assert!(
            record.get("set").is_none(),
            "one name for the set: {record}"
        );
    }

    #[test]
    fn inner_fields_win_and_recorded_fields_count() {
        let records = records(|| {
            let outer = tracing::info_span!("outer", writer = "a", phase = tracing::field::Empty);
            let _outer = outer.enter();
            outer.record("phase", "thaw");
            let inner = tracing::info_span!("inner", writer = "b");
            let _inner = inner.enter();
            tracing::info!(message = "level", target_volume = "/srv");
        });
        let record = &records[0];
        assert_eq!(record["writer"], "b");
        assert_eq!(record["phase"], "thaw");
        assert_eq!(record["message"], "level");
        assert_eq!(record["target_volume"], "/srv");
    }

    #[test]
    fn fields_named_like_the_fixed_keys_are_kept_apart() {
        let records = records(|| tracing::info!(level = 3_u64, target = "x", "hello"));
        let record = &records[0];
        assert_eq!(record["level"], "INFO");
        assert_eq!(record["field_level"], 3);
        assert_eq!(record["field_target"], "x");
    }
}
