//! TcpNetwork on the loopback interface: frames both ways through the
//! `Network` trait objects, and a clear, prompt error for a dead address.

use std::io;
use std::sync::Arc;
use std::time::Duration;
use weir::io::{
    decode_message, write_message, FrameReader, FrameWriter, Listener, Network, NetworkRef,
    TcpNetwork,
};
use weir::proto::{client_response, ClientRequest, ClientResponse, ListTopicsResponse};

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

/// Answers each request on one connection with the response of the same id.
async fn serve_one(listener: &mut dyn Listener) {
    let (stream, _peer) = listener.accept().await.unwrap();
    let (r, w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    while let Some(frame) = reader.read_frame().await.unwrap() {
        let req: ClientRequest = decode_message(frame).unwrap();
        writer.push(&response(req.correlation_id)).await.unwrap();
        writer.flush().await.unwrap();
    }
}

#[tokio::test]
async fn tcp_exchanges_frames_both_ways() {
    let net: NetworkRef = Arc::new(TcpNetwork::new());
    let mut listener = net.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    let server = serve_one(listener.as_mut());
    let client = async {
        let stream = net.connect(&addr).await.unwrap();
        let (r, mut w) = tokio::io::split(stream);
        let mut reader = FrameReader::new(r);
        // Pipelined: every request goes out before any response is read.
        for id in 1..=3 {
            write_message(&mut w, &request(id)).await.unwrap();
        }
        for id in 1..=3 {
            let frame = reader.read_frame().await.unwrap().unwrap();
            assert_eq!(
                decode_message::<ClientResponse>(frame).unwrap(),
                response(id)
            );
        }
        // Hanging up ends the server's loop cleanly.
    };
    tokio::join!(server, client);
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_clearly_and_promptly() {
    let net = TcpNetwork {
        connect_timeout: Duration::from_secs(2),
    };
    // A port that was just free: bound, then released.
    let addr = {
        let listener = net.bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let outcome = tokio::time::timeout(Duration::from_secs(4), net.connect(&addr)).await;
    let err = match outcome {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("connected to a closed port {addr}"),
        Err(_) => panic!("connect to {addr} outlived its own timeout"),
    };
    let text = err.to_string();
    assert!(text.contains(&addr), "{text}");
    assert!(text.contains("is the broker running?"), "{text}");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let net = TcpNetwork::new();
    let first = net.bind("127.0.0.1:0").await.unwrap();
    let addr = first.local_addr().unwrap();
    let err = match net.bind(&addr).await {
        Ok(_) => panic!("bound {addr} twice"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&addr), "{err}");
}
