//! [`SimNetwork`]: Weir's [`Network`] on turmoil's simulated TCP, so that the
//! broker's connection handling runs unchanged inside a simulation, where
//! partitions, latency and loss are seeded and replayable.
//!
//! # Where it works
//!
//! Like every turmoil socket, these must be used from inside a turmoil host or
//! client; anywhere else turmoil panics. That is a wiring mistake, not an I/O
//! error, so it is not turned into one.
//!
//! # turmoil 0.7.2 facts this relies on
//!
//! - `turmoil::net::TcpStream` implements tokio's `AsyncRead` and
//!   `AsyncWrite`, is `Unpin` and `Send` (checked at compile time below, by
//!   boxing it as a [`BoxStream`]), and so are the futures of `bind`,
//!   `accept` and `connect`.
//! - `TcpListener::bind` accepts only the unspecified address (`0.0.0.0`,
//!   `::`) or loopback; the host's own name or address is refused with
//!   `AddrNotAvailable`, and an address of the other IP version than the
//!   host's panics. See [`SimNetwork`] for how bind addresses are translated.
//! - `TcpStream::connect` resolves a host name through the simulation's DNS
//!   (the names given to `Sim::host` / `Sim::client`); a name that is not a
//!   host fails with `NotFound`, a host with nothing on the port refuses.
//! - A partitioned link drops segments silently, SYNs included: reads and
//!   connects stall rather than fail. That is why connects here are bounded
//!   by a timeout (on simulated time) exactly as on real TCP; reads need the
//!   caller's own timeout.
//! - `set_nodelay` is a no-op in turmoil (segments are never coalesced), so
//!   it is not called.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use weir::io::net::{connect_within, with_addr};
use weir::io::{BoxFuture, BoxStream, Listener, Network, CONNECT_TIMEOUT_DEFAULT};

/// The current turmoil host's simulated network.
///
/// # Bind addresses
///
/// Configured addresses name the host ("broker-1:9092"), which turmoil's
/// `bind` refuses. So `bind` keeps loopback and unspecified addresses as they
/// are, and binds any other host part (a host name, or the host's own IP)
/// as the unspecified address of the same IP version, on the same port:
/// reachable from every host, as a broker listening on its own name is. The
/// host part is expected to be this host's name; turmoil has no per-name
/// listening, so another name binds this host just the same (and a name no
/// host has gets a fresh address from turmoil's DNS, only to pick the IP
/// version). `"localhost"` binds IPv4 loopback.
///
/// The listener's `local_addr` repeats the host part as given, with the port
/// it got, so that "broker-1:0" reports "broker-1:49152", which other hosts
/// can connect to.
#[derive(Debug, Clone, Copy)]
pub struct SimNetwork {
    /// How long [`Network::connect`] waits for the peer to accept, in
    /// simulated time.
    pub connect_timeout: Duration,
}

impl Default for SimNetwork {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
        }
    }
}

impl SimNetwork {
    /// A simulated network with the default connect timeout.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Network for SimNetwork {
    fn bind(&self, addr: &str) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        // The future outlives the borrow of `addr`, so it owns a copy.
        let addr = addr.to_owned();
        Box::pin(async move {
            let (host, bind_addr) = bind_addr(&addr)?;
            let listener = turmoil::net::TcpListener::bind(bind_addr)
                .await
                .map_err(|e| with_addr(e, "bind", &addr))?;
            Ok(Box::new(SimListener { listener, host }) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let connect = turmoil::net::TcpStream::connect(addr.as_str());
            let stream = connect_within(&addr, self.connect_timeout, connect).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Splits "host:port" into the host part (without IPv6 brackets) and the
/// port.
fn split_host_port(addr: &str) -> io::Result<(&str, u16)> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("address {addr:?} is not \"host:port\""),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse::<u16>().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host, port))
}

/// The host part as given, and the address turmoil will accept for binding
/// (see [`SimNetwork`]).
fn bind_addr(addr: &str) -> io::Result<(String, SocketAddr)> {
    let (host, port) = split_host_port(addr)?;
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() || ip.is_unspecified() => ip,
        Ok(ip) => unspecified_like(ip),
        Err(_) if host == "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Err(_) => unspecified_like(turmoil::lookup(host)),
    };
    Ok((host.to_owned(), SocketAddr::new(ip, port)))
}

/// The unspecified address of `ip`'s version.
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A turmoil TCP listener behind [`Listener`].
struct SimListener {
    listener: turmoil::net::TcpListener,
    /// The host part the caller bound, reported back by `local_addr`.
    host: String,
}

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self
                .listener
                .accept()
                .await
                .map_err(|e| with_addr(e, "accept on", &self.listener_addr()))?;
            Ok((Box::new(stream) as BoxStream, peer.to_string()))
        })
    }

    fn local_addr(&self) -> io::Result<String> {
        let port = self.listener.local_addr()?.port();
        Ok(join_host_port(&self.host, port))
    }
}

impl SimListener {
    fn listener_addr(&self) -> String {
        self.local_addr()
            .unwrap_or_else(|_| format!("{}:?", self.host))
    }
}

/// "host:port", bracketing IPv6 addresses so the result parses again.
fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<Ipv6Addr>() {
        Ok(_) => format!("[{host}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}
