//! Token buckets that grant upstream reads.
//!
//! Every upstream read passes through up to three buckets: the site's (all
//! WAN traffic), its class's (client misses or pre-positioning) and
//! optionally a group's (one pre-positioning channel). A flow asks for the
//! bytes it has just read; the request is granted when every bucket on its
//! path holds a non-negative balance, and then charged to each, possibly
//! into debt. Charging after the fact keeps reads at whatever size the
//! socket delivers, and the debt makes the flow (and everyone sharing the
//! bucket) wait exactly as long as those bytes should have taken.
//!
//! Among the requests that could be granted, the class with the higher
//! priority goes first; within a class, self-clocked fair queueing orders
//! them by virtual finish time, so flows share a bucket by bytes, not by
//! number of reads.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::Rate;

/// Traffic classes, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Fetches a client is waiting for.
    Interactive = 0,
    /// Pre-positioning (channel syncs) with no client waiting.
    Bulk = 1,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Interactive, Class::Bulk];

    pub fn name(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Bulk => "prepos",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BucketId(usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

#[derive(Debug)]
struct Bucket {
    /// Bytes per second; `None` = unlimited.
    rate: Option<f64>,
    tokens: f64,
    updated: Instant,
    granted: u64,
}

impl Bucket {
    fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate: rate.limit(),
            tokens: 0.0,
            updated: now,
            granted: 0,
        }
    }

    fn refill(&mut self, now: Instant, burst: Duration) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        if let Some(rate) = self.rate {
            let cap = rate * burst.as_secs_f64();
            self.tokens = (self.tokens + rate * elapsed).min(cap.max(self.tokens.min(0.0)));
            if self.tokens > cap {
                self.tokens = cap;
            }
        }
    }

    fn eligible(&self) -> bool {
        match self.rate {
            None => true,
            Some(rate) => rate > 0.0 && self.tokens >= 0.0,
        }
    }

    /// Time until the balance is back to zero; `None` if it never will be.
    fn time_to_eligible(&self) -> Option<Duration> {
        match self.rate {
            None => Some(Duration::ZERO),
            Some(rate) if rate > 0.0 => {
                Some(Duration::from_secs_f64((-self.tokens).max(0.0) / rate))
            }
            Some(_) => None,
        }
    }
}

#[derive(Debug)]
struct Waiter {
    ticket: u64,
    class: Class,
    buckets: [Option<BucketId>; 3],
    bytes: u64,
    finish_tag: f64,
}

/// The bucket set and the queue of waiting reads. See the module docs.
#[derive(Debug)]
pub struct Shaper {
    buckets: Vec<Bucket>,
    waiting: Vec<Waiter>,
    granted: HashSet<u64>,
    flow_finish: HashMap<u64, f64>,
    virtual_time: [f64; 2],
    next_ticket: u64,
    burst: Duration,
}

const SITE: BucketId = BucketId(0);

fn class_bucket(class: Class) -> BucketId {
    BucketId(1 + class as usize)
}

impl Shaper {
    /// A shaper with every bucket unlimited.
    pub fn new(now: Instant) -> Self {
        Self {
            buckets: (0..3).map(|_| Bucket::new(Rate::UNLIMITED, now)).collect(),
            waiting: Vec::new(),
            granted: HashSet::new(),
            flow_finish: HashMap::new(),
            virtual_time: [0.0; 2],
            next_ticket: 0,
            burst: Duration::from_millis(100),
        }
    }

    pub fn site(&self) -> BucketId {
        SITE
    }

    pub fn class_bucket(&self, class: Class) -> BucketId {
        class_bucket(class)
    }

    /// A further bucket for a group of flows (one channel).
    pub fn add_bucket(&mut self, rate: Rate, now: Instant) -> BucketId {
        self.buckets.push(Bucket::new(rate, now));
        BucketId(self.buckets.len() - 1)
    }

    pub fn set_rate(&mut self, bucket: BucketId, rate: Rate, now: Instant) {
        let burst = self.burst;
        let Some(b) = self.buckets.get_mut(bucket.0) else {
            return;
        };
        b.refill(now, burst);
        if b.rate.is_none() && rate.limit().is_some() {
            b.tokens = 0.0;
        }
        b.rate = rate.limit();
    }

    pub fn rate(&self, bucket: BucketId) -> Rate {
        match self.buckets.get(bucket.0).and_then(|b| b.rate) {
            Some(r) => Rate::bytes_per_sec(r),
            None => Rate::UNLIMITED,
        }
    }

    /// Bytes granted through `bucket` since it was made.
    pub fn granted_bytes(&self, bucket: BucketId) -> u64 {
        self.buckets.get(bucket.0).map_or(0, |b| b.granted)
    }

    /// Whether reads of `class` (in `group`) pass every bucket unlimited, so
    /// that callers may skip the shaper.
    pub fn is_unshaped(&self, class: Class, group: Option<BucketId>) -> bool {
        [Some(SITE), Some(class_bucket(class)), group]
            .into_iter()
            .flatten()
            .all(|b| self.buckets.get(b.0).is_none_or(|b| b.rate.is_none()))
    }

    /// Queues a request for `bytes` already read by `flow`. Call [`poll`]
    /// to grant what can be granted.
    ///
    /// [`poll`]: Shaper::poll
    pub fn request(
        &mut self,
        class: Class,
        flow: u64,
        group: Option<BucketId>,
        bytes: u64,
    ) -> Ticket {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let virtual_time = self.virtual_time[class as usize];
        let last = self.flow_finish.get(&flow).copied().unwrap_or(0.0);
        let finish_tag = virtual_time.max(last) + bytes as f64;
        self.flow_finish.insert(flow, finish_tag);
        let group = group.filter(|g| g.0 < self.buckets.len());
        self.waiting.push(Waiter {
            ticket,
            class,
            buckets: [Some(SITE), Some(class_bucket(class)), group],
            bytes,
            finish_tag,
        });
        Ticket(ticket)
    }

    /// Charges `bytes` at once, without queueing: for the last read of a
    /// flow, which has nothing left to wait for but must still be paid
    /// for by whoever reads through these buckets next.
    pub fn debit(&mut self, class: Class, group: Option<BucketId>, bytes: u64, now: Instant) {
        let burst = self.burst;
        for b in [Some(SITE), Some(class_bucket(class)), group]
            .into_iter()
            .flatten()
        {
            if let Some(bucket) = self.buckets.get_mut(b.0) {
                bucket.refill(now, burst);
                if bucket.rate.is_some() {
                    bucket.tokens -= bytes as f64;
                }
                bucket.granted += bytes;
            }
        }
    }

    /// Grants every request that can be granted at `now`. Returns when a
    /// waiting request may become grantable, if any waits on a bucket that
    /// refills (a paused bucket only changes with [`set_rate`]).
    ///
    /// [`set_rate`]: Shaper::set_rate
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        let burst = self.burst;
        for b in &mut self.buckets {
            b.refill(now, burst);
        }
        loop {
            let best = self
                .waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    w.buckets
                        .iter()
                        .flatten()
                        .all(|b| self.buckets[b.0].eligible())
                })
                .min_by(|(_, a), (_, b)| {
                    (a.class, a.finish_tag)
                        .partial_cmp(&(b.class, b.finish_tag))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let w = self.waiting.swap_remove(i);
            for b in w.buckets.iter().flatten() {
                let bucket = &mut self.buckets[b.0];
                if bucket.rate.is_some() {
                    bucket.tokens -= w.bytes as f64;
                }
                bucket.granted += w.bytes;
            }
            let vt = &mut self.virtual_time[w.class as usize];
            *vt = vt.max(w.finish_tag);
            self.granted.insert(w.ticket);
        }
        self.waiting
            .iter()
            .filter_map(|w| {
                let mut wait = Duration::ZERO;
                for b in w.buckets.iter().flatten() {
                    wait = wait.max(self.buckets[b.0].time_to_eligible()?);
                }
                Some(now + wait)
            })
            .min()
    }

    /// Whether `ticket` was granted; forgets it if so.
    pub fn take_granted(&mut self, ticket: Ticket) -> bool {
        self.granted.remove(&ticket.0)
    }

    /// Withdraws a request (its reader went away).
    pub fn cancel(&mut self, ticket: Ticket) {
        self.waiting.retain(|w| w.ticket != ticket.0);
        self.granted.remove(&ticket.0);
    }

    /// Forgets a finished flow's fair-queueing state.
    pub fn forget_flow(&mut self, flow: u64) {
        self.flow_finish.remove(&flow);
    }

    /// Requests and bytes waiting in `class`.
    pub fn queued(&self, class: Class) -> (usize, u64) {
        self.waiting
            .iter()
            .filter(|w| w.class == class)
            .fold((0, 0), |(n, b), w| (n + 1, b + w.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow that always has `chunk` bytes ready and asks again as soon as
    /// it is granted, until it has read `limit` bytes; `source_rate` caps how
    /// fast its bytes arrive (a slow origin), if set.
    struct Flow {
        id: u64,
        class: Class,
        group: Option<BucketId>,
        chunk: u64,
        source_rate: Option<f64>,
        ticket: Option<Ticket>,
        ready_at: Instant,
        got: u64,
    }

    /// Runs the flows for `duration` of virtual time from `start`, stepping
    /// to each instant the shaper or a flow names.
    fn simulate(shaper: &mut Shaper, flows: &mut [Flow], start: Instant, duration: Duration) {
        let end = start + duration;
        let mut now = start;
        while now < end {
            for f in flows.iter_mut() {
                if f.ticket.is_none() && f.ready_at <= now {
                    f.ticket = Some(shaper.request(f.class, f.id, f.group, f.chunk));
                }
            }
            let wake = shaper.poll(now);
            let mut next = wake.unwrap_or(end);
            for f in flows.iter_mut() {
                if let Some(t) = f.ticket
                    && shaper.take_granted(t)
                {
                    f.ticket = None;
                    f.got += f.chunk;
                    // A slow origin's bytes keep arriving (into the socket
                    // buffer) while the flow waits for its grant.
                    f.ready_at = match f.source_rate {
                        Some(r) => f.ready_at + Duration::from_secs_f64(f.chunk as f64 / r),
                        None => now,
                    };
                }
                if f.ticket.is_none() {
                    next = next.min(f.ready_at.max(now));
                }
            }
            // Every grant happens at a poll: when nothing changed, jump to
            // the next instant something can.
            now = if next <= now {
                now + Duration::from_micros(1)
            } else {
                next
            };
        }
    }

    fn flow(id: u64, class: Class, chunk: u64) -> Flow {
        Flow {
            id,
            class,
            group: None,
            chunk,
            source_rate: None,
            ticket: None,
            ready_at: Instant::now(),
            got: 0,
        }
    }

    fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= expected * tolerance
    }

    #[test]
    fn a_class_limit_holds_within_one_percent() {
        let t0 = Instant::now();
        let mut shaper = Shaper::new(t0);
        shaper.set_rate(
            shaper.class_bucket(Class::Bulk),
            "2 Mbit/s".parse().unwrap(),
            t0,
        );
        let mut flows = [
            flow(1, Class::Bulk, 16 * 1024),
            flow(2, Class::Bulk, 60_000),
        ];
        for f in &mut flows {
            f.ready_at = t0;
        }
        simulate(&mut shaper, &mut flows, t0, Duration::from_secs(60));
        let total: u64 = flows.iter().map(|f| f.got).sum();
        assert!(
            within(total as f64, 250_000.0 * 60.0, 0.01),
            "granted {total} bytes in 60 s at 2 Mbit/s"
        );
    }

    #[test]
    fn flows_of_one_class_share_by_bytes_whatever_their_read_sizes() {
        let t0 = Instant::now();
        let mut shaper = Shaper::new(t0);
        shaper.set_rate(shaper.site(), "8 Mbit/s".parse().unwrap(), t0);
        let mut flows = [
            flow(1, Class::Interactive, 4 * 1024),
            flow(2, Class::Interactive, 64 * 1024),
            flow(3, Class::Interactive, 300 * 1024),
        ];
        for f in &mut flows {
            f.ready_at = t0;
        }
        simulate(&mut shaper, &mut flows, t0, Duration::from_secs(60));
        let total: u64 = flows.iter().map(|f| f.got).sum();
        for f in &flows {
            assert!(
                within(f.got as f64, total as f64 / 3.0, 0.05),
                "flow {} got {} of {total}",
                f.id,
                f.got
            );
        }
    }

    #[test]
    fn client_misses_take_precedence_and_bulk_gets_what_is_left() {
        let t0 = Instant::now();
        let mut shaper = Shaper::new(t0);
        shaper.set_rate(shaper.site(), "20 Mbit/s".parse().unwrap(), t0);
        let mut flows = [
            flow(1, Class::Interactive, 64 * 1024),
            flow(2, Class::Bulk, 64 * 1024),
        ];
        for f in &mut flows {
            f.ready_at = t0;
        }
        // A client miss that could take everything leaves bulk nothing...
        simulate(&mut shaper, &mut flows, t0, Duration::from_secs(30));
        assert!(
            flows[1].got <= 2 * 64 * 1024,
            "bulk got {} while a client saturated the link",
            flows[1].got
        );
        assert!(within(flows[0].got as f64, 2_500_000.0 * 30.0, 0.01));
        // ... and a client miss limited by its origin to 1 MB/s leaves bulk
        // the other 1.5 MB/s.
        let t1 = t0 + Duration::from_secs(30);
        flows[0].source_rate = Some(1_000_000.0);
        for f in &mut flows {
            f.got = 0;
        }
        simulate(&mut shaper, &mut flows, t1, Duration::from_secs(30));
        assert!(
            within(flows[0].got as f64, 30_000_000.0, 0.03),
            "client {}",
            flows[0].got
        );
        assert!(
            within(flows[1].got as f64, 45_000_000.0, 0.03),
            "bulk {}",
            flows[1].got
        );
    }

    #[test]
    fn a_paused_group_waits_without_blocking_others() {
        let t0 = Instant::now();
        let mut shaper = Shaper::new(t0);
        let channel = shaper.add_bucket("0 bit/s".parse().unwrap(), t0);
        shaper.set_rate(
            shaper.class_bucket(Class::Bulk),
            "4 Mbit/s".parse().unwrap(),
            t0,
        );
        let mut paused = flow(1, Class::Bulk, 32 * 1024);
        paused.group = Some(channel);
        let mut flows = [paused, flow(2, Class::Bulk, 32 * 1024)];
        for f in &mut flows {
            f.ready_at = t0;
        }
        simulate(&mut shaper, &mut flows, t0, Duration::from_secs(10));
        assert_eq!(flows[0].got, 0, "a paused channel read nothing");
        assert!(within(flows[1].got as f64, 5_000_000.0, 0.02));
        // The window opens: the channel gets its own 1 Mbit/s.
        let t1 = t0 + Duration::from_secs(10);
        shaper.set_rate(channel, "1 Mbit/s".parse().unwrap(), t1);
        for f in &mut flows {
            f.got = 0;
        }
        simulate(&mut shaper, &mut flows, t1, Duration::from_secs(20));
        assert!(
            within(flows[0].got as f64, 2_500_000.0, 0.03),
            "channel {}",
            flows[0].got
        );
        assert!(
            within((flows[0].got + flows[1].got) as f64, 10_000_000.0, 0.02),
            "class total {}",
            flows[0].got + flows[1].got
        );
    }

    #[test]
    fn unlimited_buckets_grant_at_once_and_cancel_forgets() {
        let t0 = Instant::now();
        let mut shaper = Shaper::new(t0);
        assert!(shaper.is_unshaped(Class::Interactive, None));
        let t = shaper.request(Class::Interactive, 1, None, 1 << 30);
        assert_eq!(shaper.poll(t0), None);
        assert!(shaper.take_granted(t));
        shaper.set_rate(shaper.site(), "1 Mbit/s".parse().unwrap(), t0);
        assert!(!shaper.is_unshaped(Class::Bulk, None));
        let a = shaper.request(Class::Bulk, 2, None, 125_000);
        shaper.poll(t0);
        assert!(shaper.take_granted(a), "a zero balance grants one read");
        let b = shaper.request(Class::Bulk, 2, None, 1);
        let wake = shaper.poll(t0).expect("b waits for the debt to clear");
        assert!(within(wake.duration_since(t0).as_secs_f64(), 1.0, 0.001));
        shaper.cancel(b);
        assert_eq!(shaper.poll(t0), None);
        assert_eq!(shaper.queued(Class::Bulk), (0, 0));
        // A flow's last read is charged without waiting; the next reader
        // pays for it.
        let t1 = t0 + Duration::from_secs(1);
        shaper.debit(Class::Bulk, None, 250_000, t1);
        let c = shaper.request(Class::Bulk, 3, None, 1);
        let wait = shaper.poll(t1).expect("c waits for the debit");
        assert!(within(wait.duration_since(t1).as_secs_f64(), 2.0, 0.001));
        assert!(!shaper.take_granted(c));
    }
}
