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
    /// same with a memory semaphore). A request counts from before its body
    /// is read until its response is queued; at the limit, connections stop
    /// reading and TCP pushes back on the clients.
    pub request_bytes_in_flight_max: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            connections_max: 1024,
            in_flight_per_connection_max: 64,
            frame_bytes_max: crate::io::frame::FRAME_BYTES_MAX,
            request_bytes_in_flight_max: REQUEST_BYTES_IN_FLIGHT_MAX_DEFAULT,
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

/// The broker-wide budget of bytes of client requests in progress (see
/// [`ServerLimits::request_bytes_in_flight_max`]).
#[derive(Clone, Debug)]
pub struct RequestBudget {
    bytes: Arc<Semaphore>,
    bytes_max: usize,
}

impl RequestBudget {
    pub fn new(bytes_max: usize) -> Self {
        let bytes_max = bytes_max.clamp(1, Semaphore::MAX_PERMITS);
        RequestBudget {
            bytes: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// Waits until `len_bytes` are free and takes them until the permit is
    /// dropped. A request larger than the whole budget takes all of it, so
    /// it still gets in, alone. Waiters are served in order, so a large
    /// request is not starved by small ones. `None` only if the budget was
    /// closed, which nothing does.
    pub async fn reserve(&self, len_bytes: usize) -> Option<OwnedSemaphorePermit> {
        // Frames are at most u32::MAX bytes long (a 4-byte length).
        let n = u32::try_from(len_bytes.min(self.bytes_max)).unwrap_or(u32::MAX);
        self.bytes.clone().acquire_many_owned(n).await.ok()
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
