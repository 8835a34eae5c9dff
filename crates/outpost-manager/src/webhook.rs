//! Alert delivery to a webhook: one JSON POST per alert opened or closed,
//! retried with exponential backoff. A bounded queue sits between the
//! evaluator and the sender, so a slow or dead receiver never holds up
//! heartbeats: when the queue is full, new events are dropped and
//! counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use tokio::sync::mpsc;

use crate::Manager;
use crate::http::client::Client;
use crate::manager::AlertEvent;

/// Events waiting for delivery at most; more are dropped.
pub const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub url: String,
    /// Tries per event, the first included.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl WebhookOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            attempts: 8,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Splits `http(s)://host:port/path?q` into the client's base and path.
fn split_url(url: &str) -> Result<(String, String), crate::ManagerError> {
    let uri: http::Uri = url.parse().map_err(|_| {
        crate::ManagerError::BadRequest(format!("webhook URL {url:?} is not a URL"))
    })?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(crate::ManagerError::BadRequest(format!(
            "webhook URL {url:?}: expected http(s)://HOST[:PORT]/PATH"
        )));
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok((format!("{scheme}://{authority}"), path))
}

impl Manager {
    /// Starts delivering alert events to `options.url`. Call once, inside
    /// the runtime.
    pub fn start_webhook(
        self: &Arc<Self>,
        options: WebhookOptions,
    ) -> Result<(), crate::ManagerError> {
        let (base, path) = split_url(&options.url)?;
        let client = Client::new(&base, None)
            .map_err(|e| crate::ManagerError::BadRequest(format!("webhook: {e}")))?
            .timeout(options.timeout);
        let (tx, mut rx) = mpsc::channel::<AlertEvent>(QUEUE);
        if self.webhook.set(tx).is_err() {
            return Err(crate::ManagerError::Internal(
                "webhook already started".into(),
            ));
        }
        let manager = self.clone();
        tokio::spawn(async move {
            let shutdown = manager.shutdown_token().clone();
            loop {
                let event = tokio::select! {
                    event = rx.recv() => match event { Some(e) => e, None => break },
                    () = shutdown.cancelled() => break,
                };
                let delivered = tokio::select! {
                    ok = deliver(&client, &path, &event, &options) => ok,
                    () = shutdown.cancelled() => break,
                };
                let counter = if delivered {
                    &manager.stats.webhook_delivered_total
                } else {
                    &manager.stats.webhook_failed_total
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(())
    }

    /// Queues an event for the webhook, never waiting.
    pub(crate) fn send_webhook(&self, event: AlertEvent) {
        if let Some(tx) = self.webhook.get()
            && tx.try_send(event).is_err()
        {
            self.stats
                .webhook_dropped_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("webhook queue full ({QUEUE}): alert event dropped");
        }
    }
}

async fn deliver(
    client: &Client,
    path: &str,
    event: &AlertEvent,
    options: &WebhookOptions,
) -> bool {
    let Ok(body) = serde_json::to_vec(event) else {
        return false;
    };
    let mut backoff = options.first_backoff;
    for attempt in 1..=options.attempts.max(1) {
        match client
            .request(Method::POST, path, Some(body.clone().into()))
            .await
        {
            Ok((status, _)) if status.is_success() => return true,
            Ok((status, _)) => tracing::warn!(attempt, %status, "webhook refused the alert"),
            Err(e) => tracing::warn!(attempt, "webhook: {e}"),
        }
        if attempt < options.attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(options.max_backoff);
        }
    }
    tracing::error!(
        "webhook: alert {} {} not delivered after {} attempts",
        event.alert.id,
        event.event,
        options.attempts
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_base_and_path() {
        assert_eq!(
            split_url("http://h:9/hook?x=1").unwrap(),
            ("http://h:9".into(), "/hook?x=1".into())
        );
        assert_eq!(split_url("https://h").unwrap().1, "/");
        assert!(split_url("h/hook").is_err());
    }
}
