//! The client-facing server: accepts connections, reads framed requests,
//! runs them concurrently (up to a per-connection limit) and writes each
//! response, tagged with its request's correlation id, as it completes.
//!
//! - [`connection`]: one client connection.
//! - [`handlers`]: what each request does.

pub mod connection;
pub mod handlers;

use crate::io::net::Listener;
use handlers::Services;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
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
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            connections_max: 1024,
            in_flight_per_connection_max: 64,
            frame_bytes_max: crate::io::frame::FRAME_BYTES_MAX,
        }
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
        let (services, shutdown) = (services.clone(), shutdown.clone());
        connections.spawn(async move {
            connection::serve(stream, addr, services, limits, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
