//! The network seam: listening, connecting and byte streams, behind one
//! object-safe interface.
//!
//! The broker never names `tokio::net`: it holds a [`NetworkRef`] and asks it
//! for listeners and connections. Production hands it [`TcpNetwork`]; the
//! simulator hands it turmoil's simulated network (`weir_sim::SimNetwork`),
//! where partitions, latency and message loss are seeded and replayable. The
//! connection handling above is the same in every case.
//!
//! Addresses are `"host:port"` strings. Each implementation resolves the host
//! its own way (tokio through the system resolver, turmoil through the names
//! of its simulated hosts), so the broker can pass configured addresses
//! straight through without knowing which network it runs on.
//!
//! The traits return boxed futures rather than using `async fn` so that they
//! stay object-safe without a macro crate: one allocation per bind, accept or
//! connect is noise next to the syscalls (or simulated round trips) behind it.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connected, bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A stream of whichever network produced it.
pub type BoxStream = Box<dyn Stream>;

/// A bound socket accepting connections.
pub trait Listener: Send {
    /// Waits for the next connection; returns it with the peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>>;
    /// The address this listener is bound to, with the port it actually got
    /// (useful after binding port 0).
    fn local_addr(&self) -> io::Result<String>;
}

/// Everything the broker does to reach, or be reached by, other machines.
pub trait Network: Send + Sync + Debug + 'static {
    /// Starts listening on `addr` ("host:port"; port 0 picks a free one).
    fn bind(&self, addr: &str) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;
    /// Opens a connection to `addr` ("host:port"), failing instead of
    /// waiting forever when nobody answers.
    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxStream>>;
}

/// A shared handle to a network implementation.
pub type NetworkRef = Arc<dyn Network>;

/// How long a connect may take before it fails, unless configured otherwise.
/// Long enough for a loaded broker to accept, short enough that a client
/// pointed at a dead address hears about it while the user still waits.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Runs `connect` for at most `timeout`, turning both a timeout and a failure
/// into an error that names `addr` and suggests the likely cause.
///
/// Shared by every [`Network`] so that a dead address reads the same on real
/// and simulated networks. The timer is tokio's, so under turmoil it runs on
/// simulated time.
pub async fn connect_within<S>(
    addr: &str,
    timeout: Duration,
    connect: impl Future<Output = io::Result<S>>,
) -> io::Result<S> {
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(connect_failed(addr, e)),
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "connect to {addr} timed out after {} ms: is the broker running?",
                timeout.as_millis()
            ),
        )),
    }
}

/// Names the address in a connect error; a refusal almost always means
/// nothing listens there, so say so.
fn connect_failed(addr: &str, e: io::Error) -> io::Error {
    let text = match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connect to {addr} refused ({e}): is the broker running?")
        }
        _ => format!("connect to {addr} failed: {e}"),
    };
    io::Error::new(e.kind(), text)
}

/// Names the address in an error, keeping its kind so callers can still
/// match on it.
pub fn with_addr(e: io::Error, what: &str, addr: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
}

/// The machine's TCP stack, through tokio.
#[derive(Debug, Clone, Copy)]
pub struct TcpNetwork {
    /// How long [`Network::connect`] waits for the peer to accept.
    pub connect_timeout: Duration,
}

impl Default for TcpNetwork {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
        }
    }
}

impl TcpNetwork {
    /// A TCP network with the default connect timeout.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Network for TcpNetwork {
    fn bind(&self, addr: &str) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        // The future outlives the borrow of `addr`, so it owns a copy.
        let addr = addr.to_owned();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(|e| with_addr(e, "bind", &addr))?;
            Ok(Box::new(TcpListener { listener }) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let connect = tokio::net::TcpStream::connect(addr.as_str());
            let stream = connect_within(&addr, self.connect_timeout, connect).await?;
            no_delay(&stream).map_err(|e| with_addr(e, "set TCP_NODELAY on", &addr))?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Turns off Nagle's algorithm. Requests and responses are small frames
/// written whole; letting the kernel hold them back waiting for an ACK
/// would add a delayed-ACK round (tens of ms) to every pipelined exchange.
fn no_delay(stream: &tokio::net::TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// A tokio TCP listener behind [`Listener`].
#[derive(Debug)]
struct TcpListener {
    listener: tokio::net::TcpListener,
}

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await.map_err(|e| self.named(e))?;
            let peer = peer.to_string();
            no_delay(&stream).map_err(|e| with_addr(e, "set TCP_NODELAY on", &peer))?;
            Ok((Box::new(stream) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<String> {
        Ok(self.listener.local_addr()?.to_string())
    }
}

impl TcpListener {
    fn named(&self, e: io::Error) -> io::Error {
        let local = self
            .local_addr()
            .unwrap_or_else(|_| "an unknown address".to_owned());
        with_addr(e, "accept on", &local)
    }
}
