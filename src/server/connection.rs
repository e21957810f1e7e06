//! One client connection: a reader that decodes requests and starts each
//! as its own task (at most `in_flight_per_connection_max` at once), and a
//! writer that sends responses as they complete. A malformed frame is
//! answered with an INVALID_REQUEST error and the connection is closed: the
//! stream can no longer be trusted to be in step.

use super::handlers::{self, Services};
use super::ServerLimits;
use crate::io::frame::{self, FrameReader};
use crate::io::net::BoxStream;
use crate::proto::{ClientRequest, ClientResponse, Error, ErrorCode};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// Serves one connection until the client closes it, sends garbage, or
/// `shutdown` turns true (then requests already read still get answers).
pub async fn serve(
    stream: BoxStream,
    addr: String,
    services: Arc<Services>,
    limits: ServerLimits,
    shutdown: watch::Receiver<bool>,
) {
    let (read_half, mut write_half) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<ClientResponse>(limits.in_flight_per_connection_max);
    let writer = async move {
        while let Some(resp) = rx.recv().await {
            if frame::write_message(&mut write_half, &resp).await.is_err() {
                return;
            }
        }
    };
    let reader = read_requests(read_half, addr, services, limits, tx, shutdown);
    // The reader ends on EOF or a bad frame; the writer then drains what the
    // handlers still send and ends when the last sender is gone.
    tokio::join!(reader, writer);
}

async fn read_requests(
    read_half: tokio::io::ReadHalf<BoxStream>,
    addr: String,
    services: Arc<Services>,
    limits: ServerLimits,
    tx: mpsc::Sender<ClientResponse>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reader = FrameReader::with_max_bytes(read_half, limits.frame_bytes_max);
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_per_connection_max));
    let mut handlers = JoinSet::new();
    loop {
        while handlers.try_join_next().is_some() {}
        // Reading a frame is cancel safe: stopping mid-frame loses nothing
        // that matters, since the connection is closing.
        let read = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            read = reader.read_frame() => read,
        };
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(invalid(0, format!("unreadable frame: {e}"))).await;
                slog::debug!(services.logger, "closing client connection"; "remote" => &addr, "error" => %e);
                break;
            }
        };
        let req: ClientRequest = match frame::decode_message(frame) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx
                    .send(invalid(0, format!("undecodable request: {e}")))
                    .await;
                break;
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (services, tx) = (services.clone(), tx.clone());
        handlers.spawn(async move {
            let resp = handlers::handle(&services, req).await;
            let _ = tx.send(resp).await;
            drop(permit);
        });
    }
    // Finish what was started before closing: in-flight produces get their
    // answers.
    while handlers.join_next().await.is_some() {}
}

fn invalid(correlation_id: u64, message: String) -> ClientResponse {
    ClientResponse {
        correlation_id,
        error: Some(Error {
            code: ErrorCode::InvalidRequest as i32,
            message,
            leader_id: 0,
        }),
        body: None,
    }
}
