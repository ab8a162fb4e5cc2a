//! Where the time of one create or start goes. The api and the worker mark
//! their steps with `step!` spans (target `vsfleet::step`, debug level, off
//! in production unless asked for); this layer keeps when each one opened
//! and closed, and [`breakdown`] lays one job's steps on the time line
//! from the request sent to the job seen as done through the API. The
//! gaps between steps are named too (queue wait, event recorded, API
//! visible), so the parts add up to the whole; a step that runs beside
//! the next one counts only until that one starts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::span::{Attributes, Id};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, fmt};
use vsfleet_contract::telemetry::STEP_TARGET;

static CLOSED: Mutex<Vec<Closed>> = Mutex::new(Vec::new());
/// Steps are kept only while a scenario asks for them ([`record`]).
static RECORDING: AtomicBool = AtomicBool::new(false);

/// One step that ran.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    pub name: &'static str,
    pub start: Instant,
    pub end: Instant,
}

struct Opened(Instant);

struct Recorder;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !RECORDING.load(Ordering::Relaxed) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let end = Instant::now();
        let Some(span) = ctx.span(&id) else { return };
        let Some(start) = span.extensions().get::<Opened>().map(|o| o.0) else { return };
        let step = Closed { name: span.metadata().name(), start, end };
        CLOSED.lock().unwrap_or_else(|e| e.into_inner()).push(step);
    }
}

/// The bench's logging (`RUST_LOG`, default `error`, on stderr) and, with
/// `steps`, the step recorder, which sees only `vsfleet::step` spans.
pub fn install(steps: bool) {
    let log = match steps {
        true => EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()),
        false => EnvFilter::new("error"),
    };
    let recorder = steps.then(|| Recorder.with_filter(Targets::new().with_target(STEP_TARGET, Level::DEBUG)));
    tracing_subscriber::registry()
        .with(fmt::layer().with_writer(std::io::stderr).with_filter(log))
        .with(recorder)
        .init();
}

/// Starts or stops keeping steps (off by default: other scenarios would
/// pay a lock per span).
pub fn record(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// The steps closed since the last call.
pub fn take() -> Vec<Closed> {
    std::mem::take(&mut *CLOSED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The parts of one job's time line, in order, in milliseconds; they add
/// up to `seen - sent`. `sent`: the request left the client; `answered`:
/// its 202 arrived; `seen`: the client read the job as succeeded.
pub fn breakdown(steps: &[Closed], sent: Instant, answered: Instant, seen: Instant) -> Vec<(&'static str, f64)> {
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1000.0;
    let total = |name: &str| steps.iter().filter(|s| s.name == name).map(|s| ms(s.start, s.end)).sum::<f64>();
    let last = |name: &str| steps.iter().filter(|s| s.name == name).map(|s| s.end).max();
    let first_start = |name: &str| steps.iter().filter(|s| s.name == name).map(|s| s.start).min();
    let published = last("publish").unwrap_or(answered);
    let reported = last("report outcome").unwrap_or(seen);
    let recorded = steps.iter().filter(|s| s.name == "record job events" && s.end >= reported).map(|s| s.end).min();
    let recorded = recorded.unwrap_or(reported);
    // The 202 travels back while the worker starts: off the critical path.
    let _ = answered;
    let mut parts = vec![
        ("commit", total("commit")),
        ("publish, acknowledged", total("publish")),
        ("rest of the request", ms(sent, published) - total("commit") - total("publish")),
        ("queue wait", ms(published, first_start("lock").unwrap_or(published))),
    ];
    // A step's share of the critical path: until it ends, or until the
    // next step starts if that is sooner (a report sent while the work
    // runs costs the job only the time to send it).
    let worker: Vec<&Closed> = steps.iter().filter(|s| WORKER.contains(&s.name)).collect();
    let share = |s: &Closed| {
        let next = worker.iter().filter(|o| o.start > s.start).map(|o| o.start).min();
        ms(s.start, next.map_or(s.end, |n| n.min(s.end)))
    };
    for name in WORKER {
        parts.push((name, worker.iter().filter(|s| s.name == name).map(|s| share(s)).sum()));
    }
    parts.push(("event recorded", ms(reported, recorded)));
    parts.push(("API visible", ms(recorded, seen)));
    // The worker's gaps (parsing, checks, spawning): what no step covers.
    let named: f64 = parts.iter().map(|(_, v)| v).sum();
    parts.push(("between steps", ms(sent, seen) - named));
    parts
}

/// The worker's steps, in the order a create runs them.
const WORKER: [&str; 10] = [
    "lock",
    "fence",
    "report started",
    "dirs and spec file",
    "docker inspect",
    "docker list",
    "docker create",
    "docker start",
    "observe",
    "report outcome",
];
