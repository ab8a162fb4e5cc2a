//! Consuming this host's jobs: one durable consumer per host, shared by every
//! worker process on it. A message is acknowledged only after the work is
//! done and reported; until then a crash means redelivery.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message, consumer::PullConsumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use vsfleet_contract::{Action, JobEvent, JobId, JobPhase, JobRequest, ServerId, Settings, Subjects, step};

use crate::error::OpError;
use crate::fence::{self, Admission};
use crate::layout::DataRoot;
use crate::lock;
use crate::ops::{Execute, Outcome};
use crate::report::Reporter;

pub async fn consumer(jobs: &jetstream::stream::Stream, settings: &Settings) -> anyhow::Result<PullConsumer> {
    // Create or update: a changed ack wait or max deliver applies to a
    // consumer made by an earlier version.
    let config = vsfleet_contract::jetstream::jobs_consumer(settings, &settings.worker.host_id);
    Ok(jobs.create_consumer(config).await?)
}

/// What every job task shares.
pub struct JobContext<E> {
    pub ops: E,
    pub dead: crate::dead::DeadLetters,
    pub root: DataRoot,
    pub reporter: Reporter,
    pub subjects: Subjects,
    pub host: String,
    pub max_deliver: i64,
    pub ack_wait: Duration,
    pub retry: crate::retry::Policy,
    /// Fetching pauses while the host is degraded (Docker unreachable).
    pub health: crate::health::Health,
    /// A job published by hand carries no deadline: it gets its action's,
    /// counted from when the message was stored, so a purge published for
    /// a host that is away does not run days later.
    pub deadlines: vsfleet_contract::settings::Deadlines,
}

impl<E> JobContext<E> {
    /// The context of this host's jobs, from the settings: its data root,
    /// reporting and dead letters on `js`, retries, deadlines.
    pub fn new(ops: E, js: &jetstream::Context, settings: &Settings, health: crate::health::Health) -> Self {
        let (subjects, host) = (settings.subjects(), settings.worker.host_id.clone());
        Self {
            ops,
            root: DataRoot::new(settings.worker.data_root.clone()),
            dead: crate::dead::DeadLetters::new(js.clone(), subjects.clone(), &host),
            reporter: Reporter::new(js.clone(), &subjects, &host),
            subjects,
            host,
            max_deliver: settings.nats.max_deliver,
            ack_wait: Duration::from_secs(settings.nats.ack_wait_secs),
            retry: crate::retry::Policy::from_settings(&settings.worker),
            health,
            deadlines: settings.api.deadlines.clone(),
        }
    }
}

/// Pulls only as many messages as there are free slots, so no message waits
/// in a local buffer while its ack deadline runs. Returns when `shutdown` is
/// cancelled and the running jobs have finished (or `drain` has passed;
/// jobs still running then are redelivered elsewhere after their ack wait).
pub async fn run<E: Execute>(
    consumer: PullConsumer,
    ctx: Arc<JobContext<E>>,
    concurrency: usize,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    'fetch: while !shutdown.is_cancelled() {
        // While Docker is unreachable, jobs wait in the queue rather than
        // spend their deliveries failing here.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            () = ctx.health.wait_until_healthy() => {}
        }
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let batch = consumer.batch().max_messages(permits.len()).expires(Duration::from_secs(1)).messages().await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "cannot pull jobs; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'fetch,
                }
            }
        };
        while let Some(next) = batch.next().await {
            let message = match next {
                Ok(m) => m,
                Err(error) => {
                    tracing::debug!(%error, "pull batch ended");
                    break;
                }
            };
            let Some(permit) = permits.pop() else { break };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                // A panic ends the inner task only; the message is then
                // redelivered after its ack wait.
                if let Err(panic) = tokio::spawn(handle(ctx, message)).await {
                    tracing::error!(error = %panic, "job task panicked");
                }
                drop(permit);
            });
        }
    }
    tracing::info!("stopped fetching jobs; waiting for running ones");
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(?drain, "jobs still running at the drain deadline; they will be redelivered");
    }
}

async fn handle<E: Execute>(ctx: Arc<JobContext<E>>, message: Message) {
    let (stream_seq, attempt, stored_at) = match message.info() {
        Ok(info) => (
            info.stream_sequence,
            info.delivered.max(1) as u64,
            DateTime::from_timestamp(info.published.unix_timestamp(), info.published.nanosecond()),
        ),
        Err(error) => {
            tracing::error!(%error, "job message without JetStream info; terminated");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let subject = message.subject.to_string();
    let request: JobRequest = match serde_json::from_slice(&message.payload) {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(subject, %error, payload = %String::from_utf8_lossy(&message.payload), "poison job (not a job payload)");
            let ack = ctx.dead.bury(&message, "unknown", &format!("not a job payload: {error}")).await;
            let _ = message.ack_with(ack).await;
            return;
        }
    };
    // Ids from the payload, else the publish's message id, else one derived
    // from the stream sequence so every redelivery carries the same id.
    let job_id = request
        .job_id
        .or_else(|| {
            let header = message.headers.as_ref()?.get(async_nats::header::NATS_MESSAGE_ID)?;
            header.as_str().parse().ok()
        })
        .unwrap_or_else(|| JobId::for_message(&ctx.subjects.jobs_stream(), stream_seq));
    let parsed = ctx.subjects.parse_job(&subject).map(|(host, action)| (host.to_owned(), action));
    let span = tracing::info_span!(
        "job",
        %job_id,
        server_id = %request.server_id,
        subject,
        attempt,
        trace_id = tracing::field::Empty
    );
    // The request's trace, when the api sent one (checked: it is outside input).
    let trace = message.headers.as_ref().and_then(|h| h.get(vsfleet_contract::trace::HEADER));
    if let Some(trace) = trace.and_then(|v| vsfleet_contract::trace::TraceId::parse(v.as_str())) {
        span.record("trace_id", tracing::field::display(trace));
    }
    async move {
        let action = match parsed {
            Some((host, Ok(action))) if host == ctx.host => action,
            Some((_, Err(unknown))) => {
                let ack = ctx.dead.bury(&message, "unknown", &format!("unknown action {unknown:?}")).await;
                let _ = message.ack_with(ack).await;
                return;
            }
            _ => {
                let ack = ctx.dead.bury(&message, "unknown", "the subject is not a job subject of this host").await;
                let _ = message.ack_with(ack).await;
                return;
            }
        };
        // A fence from the future would hold back every later job of the
        // server on this host: such a job is not acted on.
        if let Some(fence) = request.fence
            && !fence::plausible(fence, Utc::now())
        {
            let ack =
                ctx.dead.bury(&message, action.as_str(), &format!("fence {fence} is not a past time in µs")).await;
            let _ = message.ack_with(ack).await;
            return;
        }
        let deadline = request.deadline.or_else(|| Some(stored_at.unwrap_or_else(Utc::now) + ctx.deadlines.of(action)));
        let job = Job {
            ctx: &ctx,
            message: &message,
            job_id,
            job_seq: stream_seq,
            by_hand: request.job_id.is_none(),
            fence: request.fence,
            server_id: request.server_id,
            action,
            attempt,
        };
        // Progress is signalled from fetch to ack (lock wait, Docker work,
        // reports), so a short ack wait redelivers only a job whose worker died.
        let ack = job.with_progress(job.execute(&request, deadline)).await;
        if let Err(error) = message.ack_with(ack).instrument(step!("ack")).await {
            tracing::warn!(%error, ?ack, "acknowledging the job failed; it will be redelivered");
        }
    }
    .instrument(span)
    .await
}

/// How long a hand-published job waits for the api to record its outcome
/// before it is handed back (and run again, converging, later).
const HAND_JOB_RECORD_WAIT: Duration = Duration::from_secs(15);

struct Job<'a, E> {
    ctx: &'a JobContext<E>,
    message: &'a Message,
    job_id: JobId,
    job_seq: u64,
    /// Published by hand (the api always names its jobs): see [`Reporter::wait_seen_by_api`].
    by_hand: bool,
    /// See [`crate::fence`]; hand-published jobs carry none.
    fence: Option<i64>,
    server_id: ServerId,
    action: Action,
    attempt: u64,
}

impl<E: Execute> Job<'_, E> {
    /// Runs the job and says how to acknowledge its message. Past its
    /// deadline a job does not start (the api has failed it, or will), and
    /// one that runs into it is given up.
    async fn execute(&self, request: &vsfleet_contract::JobRequest, deadline: Option<DateTime<Utc>>) -> AckKind {
        let started = std::time::Instant::now();
        let record = |outcome: &str| {
            let metrics = crate::metrics::get();
            let labels = [self.action.as_str(), outcome];
            metrics.jobs.with_label_values(&labels).inc();
            metrics.job_seconds.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
        };
        // A job fetched just as Docker went away waits here, held with
        // progress signals, rather than spend its deliveries failing.
        let ready = async {
            if let Some(why) = self.ctx.health.degraded() {
                tracing::warn!(why, "host degraded: the job waits for Docker");
                self.ctx.health.wait_until_healthy().await;
            }
            lock::lock(&self.ctx.root, self.server_id, || self.progress()).instrument(step!("lock")).await
        };
        let lock = within(deadline, ready).await;
        let outcome = match &lock {
            None => Err(OpError::Deadline("it passed before the job could start")),
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot take the server lock");
                return AckKind::Nak(Some(self.backoff()));
            }
            Some(Ok(held)) => {
                let done = match step!("fence").in_scope(|| self.admit(held)) {
                    Ok(Admission::Run) => false,
                    Ok(Admission::Done) => true,
                    Ok(Admission::Superseded { newest }) => {
                        // Its outcome is recorded: the api accepted the newer job only after it.
                        tracing::warn!(
                            newest,
                            "a newer job for this server has started on this host; this stale delivery is dropped"
                        );
                        return AckKind::Ack;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read or write the server's fence");
                        return AckKind::Nak(Some(self.backoff()));
                    }
                };
                tracing::info!(action = %self.action, "job started");
                let work = async {
                    if done {
                        // Its work is done; what is left is to report the server as it is.
                        tracing::info!("this job already succeeded here; reporting it again without redoing it");
                        self.ctx.ops.observe(self.server_id).await.map(|observed| Outcome { observed, detail: None })
                    } else {
                        let attempt =
                            self.ctx.retry.run(self.action.as_str(), || self.ctx.ops.run(self.action, request));
                        within(deadline, attempt).await.unwrap_or(Err(OpError::Deadline("it passed while the job ran")))
                    }
                };
                // The start is reported while the work runs: the user sees
                // `running` as before, and the job does not wait a round
                // trip for it. Both go out on one connection, so the stream
                // stores the start before the outcome, which is sent only
                // after both are done. A start that could not be reported
                // costs nothing: the outcome says the job ran.
                let started = self.report(JobPhase::Started).instrument(step!("report started"));
                let (started, outcome) = tokio::join!(started, work);
                if let Err(error) = started {
                    tracing::warn!(error = format!("{error:#}"), "cannot report start; the outcome is reported next");
                }
                if outcome.is_ok()
                    && let Some(fence) = self.fence
                    && let Err(error) = fence::complete(held, fence)
                {
                    tracing::warn!(%error, "cannot mark the job done in the server's fence");
                }
                outcome
            }
        };
        let phase = match outcome {
            Ok(outcome) => {
                let seen = &outcome.observed;
                tracing::info!(container = ?seen.container, data_exists = seen.data_exists, "job succeeded");
                record("succeeded");
                JobPhase::Succeeded { observed: outcome.observed, detail: outcome.detail }
            }
            Err(error) => {
                let permanent = error.is_permanent();
                let last = self.attempt >= self.ctx.max_deliver as u64;
                if !permanent && !last {
                    tracing::warn!(error = format!("{error:#}"), "job failed transiently; will retry");
                    record("retried");
                    return AckKind::Nak(Some(self.backoff()));
                }
                tracing::error!(error = format!("{error:#}"), permanent, "job failed");
                record("failed");
                JobPhase::Failed {
                    error: describe(&error, permanent, self.attempt),
                    permanent,
                    observed: self.ctx.ops.observe(self.server_id).await.ok(),
                }
            }
        };
        let exhausted = match &phase {
            JobPhase::Failed { permanent: false, error, .. } => Some(error.clone()),
            _ => None,
        };
        let failed = matches!(phase, JobPhase::Failed { .. });
        // The lock is still held: the outcome is reported before another
        // job for this server can start.
        let reported = match self.report(phase).instrument(step!("report outcome")).await {
            Ok(seq) => seq,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "cannot report the outcome; the job will run again");
                return AckKind::Nak(Some(self.backoff()));
            }
        };
        drop(lock);
        if self.by_hand && !self.ctx.reporter.wait_seen_by_api(reported, HAND_JOB_RECORD_WAIT).await {
            tracing::warn!(
                "the api has not recorded this hand-published job yet; handed back so its message stays for the api to check"
            );
            return AckKind::Nak(Some(self.backoff()));
        }
        match exhausted {
            Some(error) => self.ctx.dead.bury(self.message, self.action.as_str(), &error).await,
            None if failed => AckKind::Term,
            None => AckKind::Ack,
        }
    }

    fn admit(&self, lock: &crate::lock::ServerLock) -> std::io::Result<Admission> {
        match self.fence {
            Some(fence) => fence::admit(lock, fence),
            None => Ok(Admission::Run),
        }
    }

    async fn report(&self, phase: JobPhase) -> Result<u64, crate::publish::PublishError> {
        self.ctx
            .reporter
            .send(&JobEvent {
                job_id: self.job_id,
                server_id: self.server_id,
                action: self.action,
                host: self.ctx.host.clone(),
                attempt: self.attempt,
                at: Utc::now(),
                job_seq: Some(self.job_seq),
                phase,
            })
            .await
    }

    /// Tells JetStream the job is still being worked on.
    async fn progress(&self) {
        if let Err(error) = self.message.ack_with(AckKind::Progress).await {
            tracing::debug!(%error, "progress signal failed");
        }
    }

    /// Runs `work`, signalling progress every third of the ack wait so a
    /// job is not redelivered while its worker is alive and working on it.
    async fn with_progress<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let every = (self.ctx.ack_wait / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => self.progress().await,
            }
        }
    }

    /// 2s, 4s, 8s … up to a minute.
    fn backoff(&self) -> Duration {
        Duration::from_secs(2u64.saturating_pow(self.attempt.min(6) as u32).min(60))
    }
}

/// Runs `work` until `deadline`; `None` if the deadline passed first (or
/// had already passed: then `work` is not started at all).
async fn within<T>(deadline: Option<DateTime<Utc>>, work: impl Future<Output = T>) -> Option<T> {
    let Some(deadline) = deadline else { return Some(work.await) };
    let left = (deadline - Utc::now()).to_std().ok().filter(|d| !d.is_zero())?;
    tokio::time::timeout(left, work).await.ok()
}

fn describe(error: &OpError, permanent: bool, attempt: u64) -> String {
    if permanent { error.to_string() } else { format!("{error} (gave up after {attempt} attempts)") }
}
