//! SimNetwork under turmoil: frames both ways through the `Network` trait
//! objects, bind address translation, and what partitions and held links do
//! to connections (reads and handshakes stall, and timeouts turn that into
//! errors, never panics).

use std::io;
use std::sync::Arc;
use std::time::Duration;
use turmoil::{Builder, Sim};
use weir::io::{decode_message, write_message, FrameReader, FrameWriter, Listener, NetworkRef};
use weir::proto::{client_response, ClientRequest, ClientResponse, ListTopicsResponse};
use weir_sim::SimNetwork;

const SEED: u64 = 0x5eed;
const SERVER: &str = "server";
const CLIENT: &str = "client";
const PORT: u16 = 9092;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn sim() -> Sim<'static> {
    let mut builder = Builder::new();
    builder
        .rng_seed(SEED)
        .simulation_duration(Duration::from_secs(120));
    builder.build()
}

fn network() -> NetworkRef {
    Arc::new(SimNetwork {
        connect_timeout: Duration::from_secs(1),
    })
}

fn request(correlation_id: u64) -> ClientRequest {
    ClientRequest {
        correlation_id,
        version: 1,
        body: None,
    }
}

fn response(correlation_id: u64) -> ClientResponse {
    ClientResponse {
        correlation_id,
        error: None,
        body: Some(client_response::Body::ListTopics(ListTopicsResponse {
            names: vec![format!("topic-{correlation_id}")],
        })),
    }
}

/// A server on `SERVER` that answers every request on every connection with
/// the response of the same id, until the connection ends or fails.
fn serve(sim: &mut Sim<'_>) {
    sim.host(SERVER, || async {
        let mut listener = network().bind(&format!("{SERVER}:{PORT}")).await?;
        assert_eq!(listener.local_addr()?, format!("{SERVER}:{PORT}"));
        loop {
            let (stream, _peer) = listener.accept().await?;
            tokio::spawn(async move {
                let (r, w) = tokio::io::split(stream);
                let (mut reader, mut writer) = (FrameReader::new(r), FrameWriter::new(w));
                while let Ok(Some(frame)) = reader.read_frame().await {
                    let Ok(req) = decode_message::<ClientRequest>(frame) else {
                        return;
                    };
                    if writer.push(&response(req.correlation_id)).await.is_err()
                        || writer.flush().await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

/// Sends `ids` pipelined on a fresh connection and checks every answer.
async fn exchange(net: &NetworkRef, ids: std::ops::Range<u64>) -> TestResult {
    let stream = net.connect(&format!("{SERVER}:{PORT}")).await?;
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r);
    for id in ids.clone() {
        write_message(&mut w, &request(id)).await?;
    }
    for id in ids {
        let frame = reader.read_frame().await?.ok_or("server hung up")?;
        assert_eq!(decode_message::<ClientResponse>(frame)?, response(id));
    }
    Ok(())
}

#[test]
fn frames_cross_the_simulated_network_both_ways() -> turmoil::Result {
    let mut sim = sim();
    serve(&mut sim);
    sim.client(CLIENT, async {
        let net = network();
        exchange(&net, 1..4).await?;
        // A second connection to the same listener works as well.
        exchange(&net, 10..12).await?;
        Ok(())
    });
    sim.run()
}

#[test]
fn partition_stalls_reads_and_refuses_connects_without_panicking() -> turmoil::Result {
    let mut sim = sim();
    serve(&mut sim);
    sim.client(CLIENT, async {
        let net = network();
        let stream = net.connect(&format!("{SERVER}:{PORT}")).await?;
        let (r, mut w) = tokio::io::split(stream);
        let mut reader = FrameReader::new(r);
        write_message(&mut w, &request(1)).await?;
        assert!(reader.read_frame().await?.is_some());

        turmoil::partition(CLIENT, SERVER);
        // turmoil drops segments on a partitioned link silently: the write
        // "succeeds", the answer never comes.
        write_message(&mut w, &request(2)).await?;
        let read = tokio::time::timeout(Duration::from_secs(3), reader.read_frame()).await;
        assert!(!matches!(read, Ok(Ok(Some(_)))), "read through a partition");

        // The dropped SYN takes turmoil's handshake channel with it, so a
        // connect across a partition is refused at once rather than stalling.
        let err = match net.connect(&format!("{SERVER}:{PORT}")).await {
            Ok(_) => panic!("connected through a partition"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let text = err.to_string();
        assert!(text.starts_with("connect to server:9092 refused"), "{text}");

        // Once repaired, new connections work again.
        turmoil::repair(CLIENT, SERVER);
        exchange(&net, 3..5).await?;
        Ok(())
    });
    sim.run()
}

#[test]
fn connect_times_out_while_the_link_holds_messages() -> turmoil::Result {
    let mut sim = sim();
    serve(&mut sim);
    sim.client(CLIENT, async {
        let net = network();
        // A held link keeps the SYN, unlike a partition: the handshake
        // stalls, and only the connect timeout (simulated time) ends it.
        turmoil::hold(CLIENT, SERVER);
        let started = tokio::time::Instant::now();
        let err = match net.connect(&format!("{SERVER}:{PORT}")).await {
            Ok(_) => panic!("connected through a held link"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let text = err.to_string();
        assert_eq!(
            text,
            "connect to server:9092 timed out after 1000 ms: is the broker running?"
        );
        turmoil::release(CLIENT, SERVER);
        exchange(&net, 1..3).await?;
        Ok(())
    });
    sim.run()
}

#[test]
fn bind_translates_host_addresses_and_errors_name_them() -> turmoil::Result {
    let mut sim = sim();
    sim.client(SERVER, async {
        let net = network();
        // Port 0 gets an ephemeral port; the host part is kept as given.
        let any = net.bind("0.0.0.0:0").await?;
        let any_addr = any.local_addr()?;
        assert!(any_addr.starts_with("0.0.0.0:") && any_addr != "0.0.0.0:0");
        // The host's own IP binds like its name would.
        let own_ip = turmoil::lookup(SERVER);
        let own: Box<dyn Listener> = net.bind(&format!("{own_ip}:{PORT}")).await?;
        assert_eq!(own.local_addr()?, format!("{own_ip}:{PORT}"));
        // Same port again: in use, and the error says where.
        let err = match net.bind(&format!("{SERVER}:{PORT}")).await {
            Ok(_) => panic!("bound port {PORT} twice"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().starts_with("bind server:9092: "), "{err}");
        let bad = net
            .bind("no-port-here")
            .await
            .err()
            .ok_or("bound nonsense")?;
        assert_eq!(bad.kind(), io::ErrorKind::InvalidInput);
        Ok(())
    });
    sim.run()
}

#[test]
fn connect_errors_name_the_address() -> turmoil::Result {
    let mut sim = sim();
    sim.host(SERVER, || async {
        // Up, but listening on nothing.
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client(CLIENT, async {
        let net = network();
        let refused = net.connect("server:1234").await.err().ok_or("connected")?;
        let text = refused.to_string();
        assert!(text.contains("server:1234"), "{text}");
        assert!(text.contains("is the broker running?"), "{text}");
        let unknown = net.connect("nowhere:1").await.err().ok_or("connected")?;
        assert!(unknown.to_string().contains("nowhere:1"), "{unknown}");
        Ok(())
    });
    sim.run()
}
