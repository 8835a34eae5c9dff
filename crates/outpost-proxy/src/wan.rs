//! The WAN shaper as the fills use it: the sans-io [`Shaper`] behind a
//! mutex, woken by a timer or by other grants, with rates that follow the
//! configured time-of-day schedules.
//!
//! Reads that pass only unlimited buckets never wait and never lock more
//! than once; the LAN side is never shaped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use outpost_shaper::{BucketId, Class, LocalTime, Rate, RateSchedule, Shaper, Ticket};
use tokio::sync::Notify;

/// Rate schedules for the site and each class.
#[derive(Debug, Clone, PartialEq)]
pub struct WanPolicy {
    /// All upstream traffic of the edge.
    pub site: RateSchedule,
    /// Fetches a client waits for.
    pub interactive: RateSchedule,
    /// Pre-positioning.
    pub prepos: RateSchedule,
    /// Kernel receive buffer of pre-positioning connections; `None` lets
    /// the kernel size it. Whatever a buffer holds arrives at link speed
    /// before pacing applies, so a slow limit wants a small buffer.
    pub bulk_receive_buffer: Option<usize>,
}

impl Default for WanPolicy {
    fn default() -> Self {
        Self {
            site: RateSchedule::unlimited(),
            interactive: RateSchedule::unlimited(),
            prepos: RateSchedule::unlimited(),
            bulk_receive_buffer: None,
        }
    }
}

impl WanPolicy {
    /// A receive buffer of about a quarter second at the slowest limit
    /// that pre-positioning may run under (at least 32 KiB, which still
    /// covers the bandwidth-delay product of a few Mbit/s WAN).
    pub fn receive_buffer_for(slowest: Option<f64>) -> Option<usize> {
        slowest.map(|bytes_per_sec| ((bytes_per_sec / 4.0) as usize).clamp(32 << 10, 4 << 20))
    }
}

/// The local wall clock, reduced to what windows need (injected so that the
/// proxy crate needs no time-zone code and tests can pick the time).
#[derive(Clone)]
pub struct LocalClock(pub Arc<dyn Fn() -> LocalTime + Send + Sync>);

impl LocalClock {
    pub fn now(&self) -> LocalTime {
        (self.0)()
    }
}

impl std::fmt::Debug for LocalClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalClock({:?})", self.now())
    }
}

/// Limits are rates on the link: each payload byte costs its share of
/// TCP/IP and Ethernet framing too (1514-byte frames carry 1448 bytes).
const WIRE_OVERHEAD: f64 = 1514.0 / 1448.0;

fn wire_bytes(payload: u64) -> u64 {
    (payload as f64 * WIRE_OVERHEAD).ceil() as u64
}

/// Rates re-read from the schedules at most this often.
const SCHEDULE_TICK: Duration = Duration::from_secs(1);
/// Window of the "rate now" figure.
const METER_WINDOW: Duration = Duration::from_secs(5);

struct Meter {
    samples: VecDeque<(Instant, u64)>,
}

impl Meter {
    fn record(&mut self, now: Instant, bytes: u64) {
        match self.samples.back_mut() {
            Some((t, b)) if now.duration_since(*t) < Duration::from_millis(100) => *b += bytes,
            _ => self.samples.push_back((now, bytes)),
        }
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > METER_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn bytes_per_sec(&mut self, now: Instant) -> f64 {
        self.prune(now);
        let total: u64 = self.samples.iter().map(|(_, b)| b).sum();
        total as f64 / METER_WINDOW.as_secs_f64()
    }
}

struct Inner {
    core: Shaper,
    policy: WanPolicy,
    groups: Vec<(BucketId, RateSchedule)>,
    rates_at: Option<Instant>,
    meters: [Meter; 2],
}

/// What the shaper is doing, for status and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassStatus {
    pub class: &'static str,
    /// The limit in force now, bytes per second (`None`: unlimited).
    pub limit: Option<f64>,
    /// Measured over the last few seconds, bytes per second.
    pub rate: f64,
    pub bytes_total: u64,
    pub queued_reads: usize,
    pub queued_bytes: u64,
}

pub struct WanShaper {
    inner: Mutex<Inner>,
    notify: Notify,
    clock: LocalClock,
    bytes: [AtomicU64; 2],
    next_flow: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WanShaper {
    pub fn new(policy: WanPolicy, clock: LocalClock) -> Arc<Self> {
        let now = Instant::now();
        let shaper = Arc::new(Self {
            inner: Mutex::new(Inner {
                core: Shaper::new(now),
                policy,
                groups: Vec::new(),
                rates_at: None,
                meters: [
                    Meter {
                        samples: VecDeque::new(),
                    },
                    Meter {
                        samples: VecDeque::new(),
                    },
                ],
            }),
            notify: Notify::new(),
            clock,
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            next_flow: AtomicU64::new(1),
        });
        shaper.refresh(&mut lock(&shaper.inner), now, true);
        shaper
    }

    /// A clock reading the machine's UTC time, for tests and defaults where
    /// no windows are configured.
    pub fn utc_clock() -> LocalClock {
        LocalClock(Arc::new(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let days = secs / 86_400;
            // 1970-01-01 was a Thursday (weekday 3 counting from Monday).
            LocalTime {
                weekday: ((days + 3) % 7) as u8,
                minute: ((secs % 86_400) / 60) as u16,
            }
        }))
    }

    /// Replaces the schedules (config reload).
    pub fn set_policy(&self, policy: WanPolicy) {
        let mut inner = lock(&self.inner);
        inner.policy = policy;
        self.refresh(&mut inner, Instant::now(), true);
        drop(inner);
        self.notify.notify_waiters();
    }

    /// A bucket for one group of bulk flows (a channel) with its own
    /// schedule (rate and window).
    pub fn add_group(&self, schedule: RateSchedule) -> BucketId {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        let id = inner.core.add_bucket(Rate::UNLIMITED, now);
        inner.groups.push((id, schedule));
        self.refresh(&mut inner, now, true);
        id
    }

    pub fn set_group(&self, group: BucketId, schedule: RateSchedule) {
        let mut inner = lock(&self.inner);
        if let Some(g) = inner.groups.iter_mut().find(|(id, _)| *id == group) {
            g.1 = schedule;
        }
        self.refresh(&mut inner, Instant::now(), true);
        drop(inner);
        self.notify.notify_waiters();
    }

    /// A fresh flow id for fair queueing.
    pub fn flow(&self) -> u64 {
        self.next_flow.fetch_add(1, Ordering::Relaxed)
    }

    pub fn end_flow(&self, flow: u64) {
        lock(&self.inner).core.forget_flow(flow);
    }

    fn refresh(&self, inner: &mut Inner, now: Instant, force: bool) {
        if !force
            && inner
                .rates_at
                .is_some_and(|t| now.duration_since(t) < SCHEDULE_TICK)
        {
            return;
        }
        inner.rates_at = Some(now);
        let local = self.clock.now();
        let site = inner.policy.site.at(local);
        let interactive = inner.policy.interactive.at(local);
        let prepos = inner.policy.prepos.at(local);
        let core = &mut inner.core;
        let site_bucket = core.site();
        if core.rate(site_bucket) != site {
            core.set_rate(site_bucket, site, now);
        }
        for (class, rate) in [(Class::Interactive, interactive), (Class::Bulk, prepos)] {
            let bucket = core.class_bucket(class);
            if core.rate(bucket) != rate {
                core.set_rate(bucket, rate, now);
            }
        }
        for (bucket, schedule) in &inner.groups {
            let rate = schedule.at(local);
            if core.rate(*bucket) != rate {
                core.set_rate(*bucket, rate, now);
            }
        }
    }

    /// Accounts `bytes` just read by `flow`. `Ok` when they pass at once;
    /// otherwise the caller should hand on what it holds and await the wait.
    pub fn try_charge(
        self: &Arc<Self>,
        class: Class,
        group: Option<BucketId>,
        flow: u64,
        bytes: u64,
    ) -> Result<(), ShapeWait> {
        self.bytes[class as usize].fetch_add(bytes, Ordering::Relaxed);
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.meters[class as usize].record(now, bytes);
        self.refresh(&mut inner, now, false);
        if inner.core.is_unshaped(class, group) {
            return Ok(());
        }
        let ticket = inner.core.request(class, flow, group, wire_bytes(bytes));
        inner.core.poll(now);
        if inner.core.take_granted(ticket) {
            return Ok(());
        }
        Err(ShapeWait {
            shaper: self.clone(),
            ticket: Some(ticket),
        })
    }

    /// Accounts `bytes` that end a flow: charged at once, without waiting
    /// (whoever reads next through the same buckets waits for them).
    pub fn charge_last(&self, class: Class, group: Option<BucketId>, bytes: u64) {
        self.bytes[class as usize].fetch_add(bytes, Ordering::Relaxed);
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.meters[class as usize].record(now, bytes);
        if !inner.core.is_unshaped(class, group) {
            inner.core.debit(class, group, wire_bytes(bytes), now);
        }
    }

    /// Accounts `bytes` and waits until they may pass.
    pub async fn charge(
        self: &Arc<Self>,
        class: Class,
        group: Option<BucketId>,
        flow: u64,
        bytes: u64,
    ) {
        if let Err(wait) = self.try_charge(class, group, flow, bytes) {
            wait.wait().await;
        }
    }

    pub fn status(&self) -> Vec<ClassStatus> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        self.refresh(&mut inner, now, false);
        Class::ALL
            .iter()
            .map(|&class| {
                let (queued_reads, queued_bytes) = inner.core.queued(class);
                let limit = inner
                    .core
                    .rate(inner.core.class_bucket(class))
                    .min(inner.core.rate(inner.core.site()))
                    .limit();
                ClassStatus {
                    class: class.name(),
                    limit,
                    rate: inner.meters[class as usize].bytes_per_sec(now),
                    bytes_total: self.bytes[class as usize].load(Ordering::Relaxed),
                    queued_reads,
                    queued_bytes,
                }
            })
            .collect()
    }

    /// The limit in force now for a group (channel).
    pub fn group_limit(&self, group: BucketId) -> Option<f64> {
        let mut inner = lock(&self.inner);
        self.refresh(&mut inner, Instant::now(), false);
        inner.core.rate(group).limit()
    }
}

/// A read waiting for its grant; dropping it withdraws the request.
pub struct ShapeWait {
    shaper: Arc<WanShaper>,
    ticket: Option<Ticket>,
}

impl ShapeWait {
    pub async fn wait(mut self) {
        let Some(ticket) = self.ticket else { return };
        loop {
            let notified = self.shaper.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (granted, wake) = {
                let mut inner = lock(&self.shaper.inner);
                self.shaper.refresh(&mut inner, now, false);
                let wake = inner.core.poll(now);
                (inner.core.take_granted(ticket), wake)
            };
            if granted {
                self.ticket = None;
                // The poll may have granted others too.
                self.shaper.notify.notify_waiters();
                return;
            }
            // Re-read the schedules at least every tick, so that a window
            // opening wakes a paused read.
            let deadline = wake.map_or(now + SCHEDULE_TICK, |w| w.min(now + SCHEDULE_TICK));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

impl Drop for ShapeWait {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            lock(&self.shaper.inner).core.cancel(ticket);
            self.shaper.notify.notify_waiters();
        }
    }
}

/// A passthrough body (an uncacheable response on its way to a client),
/// charged to the interactive class frame by frame: each frame goes out at
/// once, and the next waits for the shaper's grant.
pub struct ShapedBody<B> {
    inner: B,
    shaper: Arc<WanShaper>,
    flow: u64,
    wait: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl<B> ShapedBody<B> {
    pub fn new(inner: B, shaper: Arc<WanShaper>) -> Self {
        let flow = shaper.flow();
        Self {
            inner,
            shaper,
            flow,
            wait: None,
        }
    }
}

impl<B> Drop for ShapedBody<B> {
    fn drop(&mut self) {
        self.shaper.end_flow(self.flow);
    }
}

impl<B> http_body::Body for ShapedBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Some(wait) = self.wait.as_mut() {
            match wait.as_mut().poll(cx) {
                Poll::Ready(()) => self.wait = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        let frame = match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => f,
            Poll::Pending => return Poll::Pending,
        };
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
            && !data.is_empty()
        {
            let len = data.len() as u64;
            let flow = self.flow;
            if let Err(wait) = self.shaper.try_charge(Class::Interactive, None, flow, len) {
                self.wait = Some(Box::pin(wait.wait()));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.wait.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
