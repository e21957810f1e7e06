//! The client-facing server: accepts connections, reads framed requests,
//! runs them concurrently (up to a per-connection limit, and up to a
//! broker-wide budget of request bytes) and writes each response, tagged
//! with its request's correlation id, as it completes.
//!
//! - [`connection`]: one client connection.
//! - [`handlers`]: what each request does.

pub mod connection;
pub mod handlers;

use crate::io::net::Listener;
use handlers::Services;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Limits of the client server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Open client connections at most; further ones are closed at once.
    pub connections_max: usize,
    /// Requests in progress per connection; the connection stops reading
    /// while at the limit, so a client cannot queue unbounded work.
    pub in_flight_per_connection_max: usize,
    /// Largest request frame accepted.
    pub frame_bytes_max: usize,
    /// Bytes of client requests in progress at once, all connections
    /// together (Kafka's `queued.max.request.bytes`; Redpanda bounds the
    /// same with a memory semaphore). A request counts its bytes as they
    /// arrive (not as its header announces them) until its handler is
    /// done; at the limit, connections stop reading and TCP pushes back
    /// on the clients. See [`RequestBudget`].
    pub request_bytes_in_flight_max: usize,
    /// Once a request's header is in, its body must arrive within this
    /// (time spent waiting for the budget does not count), or the
    /// connection is answered INVALID_REQUEST and closed: a client that
    /// announces a request and then sends it slowly, or never, holds its
    /// connection slot and the bytes it sent for this long at most. A
    /// response the client does not take within this closes the
    /// connection too.
    pub request_read_timeout_ms: u64,
    /// A connection with no request in progress and none arriving for this
    /// long is closed (Kafka's `connections.max.idle.ms`, same default).
    pub connection_idle_timeout_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            connections_max: 1024,
            in_flight_per_connection_max: 64,
            frame_bytes_max: crate::io::frame::FRAME_BYTES_MAX,
            request_bytes_in_flight_max: REQUEST_BYTES_IN_FLIGHT_MAX_DEFAULT,
            request_read_timeout_ms: REQUEST_READ_TIMEOUT_MS_DEFAULT,
            connection_idle_timeout_ms: CONNECTION_IDLE_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// The default of [`ServerLimits::request_bytes_in_flight_max`]. Well above
/// what one producer has in flight at full speed (its 100,000-record window
/// is 11 MB of 100-byte records, and a cluster busy enough to fill more
/// gains nothing from a longer queue): with 64 producers of 1 KiB records
/// on three brokers, 16 MiB gave 286-307k records/s at 45-161 MiB peak
/// resident per broker, 64 MiB 222k at 208-298 MiB
/// (`scripts/overload-memory.sh`).
pub const REQUEST_BYTES_IN_FLIGHT_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// The default of [`ServerLimits::request_read_timeout_ms`]: Weir's
/// clients give up on a request after 10 s (`request_timeout`), so a body
/// still arriving later serves no one. A 16 MiB frame (the cap) then needs
/// 1.7 MB/s, far below any link a broker is used over.
pub const REQUEST_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Bounds of [`ServerLimits::request_read_timeout_ms`]: below 100 ms a
/// busy network's stall would cut honest requests; above 10 minutes a
/// stalled request would outlive any client waiting for it.
pub const REQUEST_READ_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;

/// The default of [`ServerLimits::connection_idle_timeout_ms`]: Kafka's
/// `connections.max.idle.ms`. Clients keep their connections busy with
/// fetches and metadata refreshes, so only abandoned ones reach it.
pub const CONNECTION_IDLE_TIMEOUT_MS_DEFAULT: u64 = 600_000;

/// Bounds of [`ServerLimits::connection_idle_timeout_ms`]: at least a
/// second, so that a client between two requests is not cut, and at most a
/// week (beyond that, a forgotten connection is as good as never closed).
pub const CONNECTION_IDLE_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> =
    1_000..=7 * 24 * 3600 * 1000;

/// The broker-wide budget of bytes of client requests in progress (see
/// [`ServerLimits::request_bytes_in_flight_max`]).
///
/// A connection takes from it the bytes of a request's body as they
/// arrive, a read at a time (at most one read per connection, the read
/// buffer's spare room, is in memory before it is counted), not the length
/// its header announces: a client that announces 16 MiB and sends nothing
/// holds nothing, and one that trickles holds what it sent. Taking a little at a time could deadlock (every
/// request half-read, each waiting for bytes the others hold), so when the
/// budget is short one request at a time may overdraw it: it reads the rest
/// of its body regardless, and holds the overdraft until its handler is
/// done. Memory is then bounded by the budget plus one frame, and some
/// request always completes.
///
/// One request takes at most a quarter of the budget proper
/// ([`RequestBudget::share_bytes_max`]); beyond that it needs the
/// overdraft. Otherwise two slow clients could stall everyone until
/// `request_read_timeout_ms`: one sending most of the budget's worth and
/// stopping, the other taking the rest and the overdraft. Now a client
/// that stops midway holds at most a quarter, and one holding the
/// overdraft delays only requests larger than a quarter (or a budget
/// already exhausted by four such clients).
#[derive(Clone, Debug)]
pub struct RequestBudget {
    bytes: Arc<Semaphore>,
    overdraft: Arc<Semaphore>,
    share_bytes_max: usize,
}

/// What a request holds of the [`RequestBudget`]: released when dropped.
#[derive(Debug, Default)]
pub struct BudgetHold {
    bytes: Option<OwnedSemaphorePermit>,
    overdraft: Option<OwnedSemaphorePermit>,
}

impl BudgetHold {
    /// Bytes held from the budget proper (not the overdraft).
    pub fn bytes(&self) -> usize {
        self.bytes.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Whether this request overdraws the budget.
    pub fn overdraws(&self) -> bool {
        self.overdraft.is_some()
    }
}

impl RequestBudget {
    pub fn new(bytes_max: usize) -> Self {
        let bytes_max = bytes_max.clamp(1, Semaphore::MAX_PERMITS);
        RequestBudget {
            bytes: Arc::new(Semaphore::new(bytes_max)),
            overdraft: Arc::new(Semaphore::new(1)),
            share_bytes_max: (bytes_max / 4).max(1),
        }
    }

    /// The most one request takes from the budget proper; beyond it, a
    /// request needs the overdraft.
    pub fn share_bytes_max(&self) -> usize {
        self.share_bytes_max
    }

    /// Makes `hold` cover `total_bytes` of one request, waiting until the
    /// budget has room for the difference or the overdraft is free (then
    /// the request overdraws, and is covered whatever it grows to). Waiters
    /// for bytes are served in order, so a large request is not starved by
    /// small ones. `false` only if the budget was closed, which nothing
    /// does.
    pub async fn cover(&self, hold: &mut BudgetHold, total_bytes: usize) -> bool {
        if hold.overdraft.is_some() {
            return true;
        }
        if total_bytes <= hold.bytes() {
            return true;
        }
        // From the budget proper, at most the request's share.
        let missing = total_bytes
            .min(self.share_bytes_max)
            .saturating_sub(hold.bytes());
        if missing > 0 {
            // Permits are u32; the share is at most the whole budget.
            let n = u32::try_from(missing).unwrap_or(u32::MAX);
            let taken = tokio::select! {
                biased;
                bytes = self.bytes.clone().acquire_many_owned(n) => bytes.map(Ok),
                overdraft = self.overdraft.clone().acquire_owned() => overdraft.map(Err),
            };
            match taken {
                Ok(Ok(bytes)) => match &mut hold.bytes {
                    Some(held) => held.merge(bytes),
                    None => hold.bytes = Some(bytes),
                },
                Ok(Err(overdraft)) => hold.overdraft = Some(overdraft),
                Err(_) => return false,
            }
        }
        // Short only when the request is larger than its share: it holds
        // all of its share and still needs the overdraft.
        if hold.bytes() < total_bytes && hold.overdraft.is_none() {
            match self.overdraft.clone().acquire_owned().await {
                Ok(o) => hold.overdraft = Some(o),
                Err(_) => return false,
            }
        }
        true
    }

    /// Bytes not taken by requests in progress.
    pub fn available_bytes(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// Accepts client connections until `shutdown` turns true; then stops
/// accepting, lets every connection finish the requests it already read, and
/// returns. Dropping the task instead drops every connection at once.
pub async fn serve_clients(
    mut listener: Box<dyn Listener>,
    services: Arc<Services>,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let budget = RequestBudget::new(limits.request_bytes_in_flight_max);
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(c) => c,
            Err(e) => {
                slog::warn!(services.logger, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            slog::warn!(services.logger, "too many client connections; closing"; "remote" => addr);
            continue;
        };
        let (services, budget, shutdown) = (services.clone(), budget.clone(), shutdown.clone());
        connections.spawn(async move {
            connection::serve(stream, addr, services, limits, budget, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use crate::broker::BrokerConfig;

    fn validated(adjust: impl Fn(&mut BrokerConfig)) -> Result<(), String> {
        let mut c = BrokerConfig::single(1, "/nonexistent".into(), "127.0.0.1:1", "127.0.0.1:2");
        adjust(&mut c);
        c.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn timeouts_out_of_bounds_are_refused_naming_the_key_and_range() {
        assert_eq!(validated(|_| {}), Ok(()));
        let e = validated(|c| c.limits.request_read_timeout_ms = 0).unwrap_err();
        assert!(
            e.contains("request_read_timeout_ms is 0; it must be from 100 to 600000"),
            "{e}"
        );
        let e = validated(|c| c.limits.connection_idle_timeout_ms = 999).unwrap_err();
        assert!(e.contains("connection_idle_timeout_ms is 999"), "{e}");
        assert!(validated(|c| c.limits.request_read_timeout_ms = 100).is_ok());
    }
}
