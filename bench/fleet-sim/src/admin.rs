//! The automation API calls the benchmark makes as an operator would:
//! put a channel in a scope, publish, ask for readiness.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::Method;
use outpost_protocol::{Readiness, ReadinessState};

use crate::client::{Answer, Conn, Target};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Admin<'a> {
    pub target: &'a Target,
    pub token: &'a str,
    pub conn: Conn,
}

impl Admin<'_> {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        self.conn
            .send(
                self.target,
                method,
                path,
                Some(self.token),
                body,
                ADMIN_TIMEOUT,
            )
            .await
    }

    /// `PUT /api/v1/channels/NAME?scope=SCOPE`.
    pub async fn put_channel(
        &mut self,
        name: &str,
        scope: &str,
        channel: serde_json::Value,
    ) -> anyhow::Result<()> {
        let path = format!("/api/v1/channels/{name}?scope={scope}");
        let answer = self.call(Method::PUT, &path, Some(channel)).await?;
        if !answer.status.is_success() {
            bail!(
                "PUT {path}: {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(())
    }

    /// `POST /api/v1/config/publish`; the version published when the
    /// answer names one.
    pub async fn publish(&mut self) -> anyhow::Result<Option<u64>> {
        let answer = self
            .call(
                Method::POST,
                "/api/v1/config/publish",
                Some(serde_json::json!({"comment": "fleet-sim"})),
            )
            .await?;
        if !answer.status.is_success() {
            bail!(
                "publish: {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        let value: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        Ok(value.get("version").and_then(serde_json::Value::as_u64))
    }

    /// `GET /api/v1/readiness?channel=..[&path=..]` `calls` times: the
    /// latencies and the last answer.
    pub async fn readiness(
        &mut self,
        channel: &str,
        path: Option<&str>,
        calls: usize,
        pause: Duration,
    ) -> anyhow::Result<(Vec<Duration>, ReadinessCounts)> {
        let query = match path {
            Some(p) => format!("/api/v1/readiness?channel={channel}&path={p}"),
            None => format!("/api/v1/readiness?channel={channel}"),
        };
        let mut times = Vec::with_capacity(calls);
        let mut last = None;
        for call in 0..calls {
            if call > 0 {
                // Spread over several heartbeat flushes and long-poll
                // expiries, as a deployment tool polling would be.
                tokio::time::sleep(pause).await;
            }
            let start = Instant::now();
            let answer = self.call(Method::GET, &query, None).await?;
            // The answer is in; parsing 1.6 MB here is the client's time.
            times.push(start.elapsed());
            let readiness: Readiness = answer.json().with_context(|| format!("GET {query}"))?;
            last = Some((readiness, answer.body.len()));
        }
        let (readiness, body_bytes) = last.context("no readiness call made")?;
        Ok((times, ReadinessCounts::of(&readiness, body_bytes)))
    }
}

/// What a readiness answer said, to show it was a real one.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReadinessCounts {
    pub ready: bool,
    pub sites: usize,
    pub complete: usize,
    pub syncing: usize,
    pub failed: usize,
    pub missing: usize,
    pub body_bytes: usize,
}

impl ReadinessCounts {
    fn of(readiness: &Readiness, body_bytes: usize) -> Self {
        let count =
            |state: ReadinessState| readiness.sites.iter().filter(|s| s.state == state).count();
        Self {
            ready: readiness.ready,
            sites: readiness.sites.len(),
            complete: count(ReadinessState::Complete),
            syncing: count(ReadinessState::Syncing),
            failed: count(ReadinessState::Failed) + count(ReadinessState::Quarantined),
            missing: count(ReadinessState::Missing),
            body_bytes,
        }
    }
}
