//! Rate limits: token buckets per caller, and the `X-RateLimit-*` answer they give.
//!
//! Pure bookkeeping: the clock is passed in, nothing here does I/O. A bucket holds up to
//! `requests` tokens and refills at `requests` per `window`; each request takes one. The
//! number of callers tracked is bounded: when the table is full, buckets that have refilled
//! completely (they hold no information) are forgotten first, then the fullest ones.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Rate;

/// One caller's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What a limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The bucket's size (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Requests left right now (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// When the bucket is full again, seconds since the epoch (`X-RateLimit-Reset`).
    pub reset_epoch: u64,
    /// Seconds until the next request would be allowed (`Retry-After`; 0 when allowed).
    pub retry_after: u64,
}

impl Decision {
    /// The `X-RateLimit-*` headers, plus `Retry-After` when refused.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            ("X-RateLimit-Limit".to_string(), self.limit.to_string()),
            (
                "X-RateLimit-Remaining".to_string(),
                self.remaining.to_string(),
            ),
            (
                "X-RateLimit-Reset".to_string(),
                self.reset_epoch.to_string(),
            ),
        ];
        if !self.allowed {
            headers.push(("Retry-After".to_string(), self.retry_after.to_string()));
        }
        headers
    }
}

/// Token buckets keyed by caller.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    max_tracked: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// A limiter allowing `rate`, tracking at most `max_tracked` callers.
    pub fn new(rate: Rate, max_tracked: usize) -> Limiter<K> {
        Limiter {
            rate,
            max_tracked: max_tracked.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether the limit is switched off (`requests = 0`).
    pub fn disabled(&self) -> bool {
        self.rate.requests == 0 || self.rate.window.is_zero()
    }

    /// Tokens per second.
    fn per_second(&self) -> f64 {
        f64::from(self.rate.requests) / self.rate.window.as_secs_f64()
    }

    /// Takes one token from `key`'s bucket if it has one.
    pub fn check(&mut self, key: &K, now: Instant, wall: SystemTime) -> Decision {
        self.decide(key, now, wall, true)
    }

    /// The state of `key`'s bucket without taking a token.
    pub fn peek(&mut self, key: &K, now: Instant, wall: SystemTime) -> Decision {
        self.decide(key, now, wall, false)
    }

    fn decide(&mut self, key: &K, now: Instant, wall: SystemTime, take: bool) -> Decision {
        let capacity = f64::from(self.rate.requests);
        if self.disabled() {
            return Decision {
                allowed: true,
                limit: 0,
                remaining: 0,
                reset_epoch: epoch(wall),
                retry_after: 0,
            };
        }
        let per_second = self.per_second();
        if !self.buckets.contains_key(key) {
            self.make_room(now);
        }
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed && take {
            bucket.tokens -= 1.0;
        }
        let tokens = bucket.tokens;
        let until_full = (capacity - tokens) / per_second;
        let retry_after = if allowed {
            0
        } else {
            ((1.0 - tokens) / per_second).ceil().max(1.0) as u64
        };
        Decision {
            allowed,
            limit: self.rate.requests,
            remaining: tokens.floor().max(0.0) as u32,
            // Rounded up: a client that waits until then finds the bucket full.
            reset_epoch: epoch_ceil(wall + Duration::from_secs_f64(until_full)),
            retry_after,
        }
    }

    /// Keeps the table under `max_tracked`: drops refilled buckets, then the fullest.
    fn make_room(&mut self, now: Instant) {
        if self.buckets.len() < self.max_tracked {
            return;
        }
        let capacity = f64::from(self.rate.requests);
        let per_second = self.per_second();
        let level = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second)
                .min(capacity)
        };
        self.buckets.retain(|_, b| level(b) < capacity);
        while self.buckets.len() >= self.max_tracked {
            let fullest = self
                .buckets
                .iter()
                .max_by(|a, b| level(a.1).total_cmp(&level(b.1)))
                .map(|(k, _)| k.clone());
            match fullest {
                Some(key) => self.buckets.remove(&key),
                None => break,
            };
        }
    }

    /// Forgets a caller (a closed connection).
    pub fn forget(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// Number of callers tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

fn epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn epoch_ceil(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(requests: u32, secs: u64) -> Rate {
        Rate {
            requests,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_bucket_allows_its_size_then_refills_over_the_window() {
        let mut limiter = Limiter::new(rate(10, 60), 100);
        let (t0, wall) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000_000));
        for left in (0..10).rev() {
            let d = limiter.check(&"alice", t0, wall);
            assert!(d.allowed);
            assert_eq!((d.limit, d.remaining), (10, left));
        }
        let refused = limiter.check(&"alice", t0, wall);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, 6, "one token every 6 s");
        assert_eq!(refused.reset_epoch, 1_000_060);
        assert!(
            refused
                .headers()
                .iter()
                .any(|(k, v)| k == "Retry-After" && v == "6")
        );
        // Another caller has its own bucket.
        assert!(limiter.check(&"bob", t0, wall).allowed);
        // Six seconds later one request is allowed again.
        let later = t0 + Duration::from_secs(6);
        assert!(limiter.check(&"alice", later, wall).allowed);
        assert!(!limiter.check(&"alice", later, wall).allowed);
        // A full window later the bucket is full.
        let d = limiter.peek(&"alice", t0 + Duration::from_secs(120), wall);
        assert_eq!(d.remaining, 10);
    }

    #[test]
    fn zero_requests_switches_the_limit_off() {
        let mut limiter = Limiter::new(rate(0, 60), 10);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.check(&1u8, now, SystemTime::now()).allowed);
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_the_busiest_callers() {
        let mut limiter = Limiter::new(rate(5, 60), 3);
        let now = Instant::now();
        let wall = SystemTime::now();
        for _ in 0..5 {
            limiter.check(&0u32, now, wall);
        }
        for key in 1..100u32 {
            limiter.check(&key, now, wall);
            assert!(limiter.tracked() <= 3);
        }
        // The exhausted caller was never the one forgotten.
        assert!(!limiter.check(&0, now, wall).allowed);
    }
}

/// What the daemon does with one WebSocket message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WsVerdict {
    /// Handle it.
    Allow,
    /// Drop it and tell the client (`RATE_LIMIT_EXCEEDED`).
    Drop(Decision),
    /// Drop it and close the connection with 4002: the client keeps flooding.
    Close(Decision),
}

/// Every rate limit the daemon enforces, owned by the event loop.
#[derive(Debug)]
pub struct RateLimits {
    /// `POST /api/agents/spawn` per token subject.
    pub spawn: Limiter<String>,
    /// `POST /api/delegate` per token subject.
    pub delegate: Limiter<String>,
    /// Requests with refused credentials per peer address.
    pub auth_failures: Limiter<std::net::IpAddr>,
    /// WebSocket messages per connection.
    ws: Limiter<crate::net::ConnId>,
    /// Messages refused in a row per connection.
    ws_refused: HashMap<crate::net::ConnId, u32>,
    ws_flood_close_after: u32,
}

impl RateLimits {
    /// The limits `config` asks for.
    pub fn new(config: &crate::config::RateLimitConfig) -> RateLimits {
        let max = config.max_tracked;
        RateLimits {
            spawn: Limiter::new(config.spawn, max),
            delegate: Limiter::new(config.delegate, max),
            auth_failures: Limiter::new(config.auth_failures, max),
            // One bucket per open connection: bounded by limits.max_connections instead.
            ws: Limiter::new(config.ws_messages, usize::MAX),
            ws_refused: HashMap::new(),
            ws_flood_close_after: config.ws_flood_close_after,
        }
    }

    /// Counts one message from `conn`.
    pub fn ws_message(
        &mut self,
        conn: crate::net::ConnId,
        now: Instant,
        wall: SystemTime,
    ) -> WsVerdict {
        let decision = self.ws.check(&conn, now, wall);
        if decision.allowed {
            self.ws_refused.remove(&conn);
            return WsVerdict::Allow;
        }
        let refused = self.ws_refused.entry(conn).or_default();
        *refused += 1;
        if *refused > self.ws_flood_close_after {
            WsVerdict::Close(decision)
        } else {
            WsVerdict::Drop(decision)
        }
    }

    /// Forgets a closed WebSocket connection.
    pub fn forget_ws(&mut self, conn: crate::net::ConnId) {
        self.ws.forget(&conn);
        self.ws_refused.remove(&conn);
    }
}
