//! What every long-running service does the same way: stop on a signal,
//! and consume a durable JetStream consumer until told to stop.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{Message, consumer::PullConsumer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or Ctrl-C.
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
        tracing::info!("shutting down");
        stop.cancel();
    });
    shutdown
}

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
