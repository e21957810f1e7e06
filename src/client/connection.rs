//! One connection to a broker: requests are written as they are made and
//! matched to responses by correlation id, so many can be in flight at once
//! (pipelining). A background task reads responses; when the connection
//! breaks every waiting request fails at once.

use crate::io::frame::{self, FrameReader};
use crate::io::net::{BoxStream, NetworkRef};
use crate::proto::{client_request, ClientRequest, ClientResponse};
use crate::server::handlers::PROTOCOL_VERSION;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::WriteHalf;
use tokio::sync::oneshot;

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Could not connect, or the connection broke.
    Connection(String),
    /// No response within the timeout.
    Timeout { after_ms: u64 },
    /// Too many requests in flight on this connection.
    Busy,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connection(m) => write!(f, "{m}"),
            ClientError::Timeout { after_ms } => {
                write!(f, "no response from the broker within {after_ms} ms")
            }
            ClientError::Busy => write!(f, "too many requests in flight on one connection"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Requests in flight per connection at most.
pub const IN_FLIGHT_MAX: usize = 256;

type Pending = Arc<Mutex<PendingMap>>;

#[derive(Default)]
struct PendingMap {
    waiting: BTreeMap<u64, oneshot::Sender<ClientResponse>>,
    /// Set once the reader stopped; later requests fail at once.
    broken: Option<String>,
}

/// A pipelined connection to one broker.
pub struct Connection {
    addr: String,
    writer: tokio::sync::Mutex<WriteHalf<BoxStream>>,
    pending: Pending,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    pub async fn connect(net: &NetworkRef, addr: &str) -> Result<Connection, ClientError> {
        let stream = net
            .connect(addr)
            .await
            .map_err(|e| ClientError::Connection(format!("cannot connect to {addr}: {e}")))?;
        let (read_half, write_half) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let reader = tokio::spawn(read_responses(read_half, pending.clone(), addr.to_string()));
        Ok(Connection {
            addr: addr.to_string(),
            writer: tokio::sync::Mutex::new(write_half),
            pending,
            next_id: AtomicU64::new(1),
            reader,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True once the connection broke; a new one must be opened.
    pub fn is_broken(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .broken
            .is_some()
    }

    /// Sends one request and waits for its response.
    pub async fn request(
        &self,
        body: client_request::Body,
        timeout: Duration,
    ) -> Result<ClientResponse, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(why) = &p.broken {
                return Err(ClientError::Connection(why.clone()));
            }
            if p.waiting.len() >= IN_FLIGHT_MAX {
                return Err(ClientError::Busy);
            }
            p.waiting.insert(id, tx);
        }
        let req = ClientRequest {
            correlation_id: id,
            version: PROTOCOL_VERSION,
            body: Some(body),
        };
        let written = {
            let mut w = self.writer.lock().await;
            frame::write_message(&mut *w, &req).await
        };
        if let Err(e) = written {
            self.forget(id);
            return Err(ClientError::Connection(format!(
                "connection to {} broke: {e}",
                self.addr
            )));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(ClientError::Connection(self.broken_reason())),
            Err(_) => {
                self.forget(id);
                Err(ClientError::Timeout {
                    after_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .remove(&id);
    }

    fn broken_reason(&self) -> String {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.broken
            .clone()
            .unwrap_or_else(|| format!("connection to {} closed", self.addr))
    }
}

async fn read_responses(read_half: tokio::io::ReadHalf<BoxStream>, pending: Pending, addr: String) {
    let mut reader = FrameReader::new(read_half);
    let why = loop {
        let bytes = match reader.read_frame().await {
            Ok(Some(b)) => b,
            Ok(None) => break format!("broker {addr} closed the connection"),
            Err(e) => break format!("connection to {addr} broke: {e}"),
        };
        let resp: ClientResponse = match frame::decode_message(bytes) {
            Ok(r) => r,
            Err(e) => break format!("broker {addr} sent an undecodable response: {e}"),
        };
        let waiter = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .remove(&resp.correlation_id);
        if let Some(w) = waiter {
            let _ = w.send(resp);
        }
    };
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    p.broken = Some(why);
    // Dropping the senders wakes every waiter with an error.
    p.waiting.clear();
}
