//! What every long-running service does the same way: stop on a signal,
//! and consume a durable JetStream consumer until told to stop.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{Message, consumer::PullConsumer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or Ctrl-C; a second one exits the process
/// at once with [`EXIT_FORCED`].
pub fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down (a second SIGTERM or Ctrl-C exits at once)");
        stop.cancel();
        // An operator who will not wait for the drain says so twice. What
        // is cut short is what a crash would cut, and recovered the same
        // way: a job in flight is redelivered, a committed request's job is
        // published by the outbox.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: exiting without finishing the drain");
        std::process::exit(EXIT_FORCED);
    });
    shutdown
}

/// The exit status after a second signal: 128 + SIGTERM, as a shell reports
/// a process killed by it.
pub const EXIT_FORCED: i32 = 143;

/// Hands each message of `consumer` to `handle`, one at a time, until
/// `shutdown`; the pull is reopened after errors (a broker restart).
pub async fn each_message<F, Fut>(consumer: &PullConsumer, what: &str, shutdown: &CancellationToken, mut handle: F)
where
    F: FnMut(Message) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "{what}: cannot pull; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => handle(message).await,
                Some(Err(error)) => {
                    tracing::warn!(error = format!("{error:#}"), "{what}: pull failed; reopening");
                    break;
                }
                None => break,
            }
        }
    }
}
