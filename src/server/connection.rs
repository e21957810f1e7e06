//! One client connection: a reader that decodes requests and starts each
//! as its own task (at most `in_flight_per_connection_max` at once), and a
//! writer that sends responses as they complete. A malformed frame is
//! answered with an INVALID_REQUEST error and the connection is closed: the
//! stream can no longer be trusted to be in step.
//!
//! Before a request's body is read, the reader takes its size from the
//! broker-wide [`RequestBudget`] and holds it until the response is queued:
//! when every connection together has that many bytes of requests in
//! progress, readers stop reading and TCP pushes back on the clients,
//! however many connect.

use super::handlers::{self, Services};
use super::{RequestBudget, ServerLimits};
use crate::io::frame::{self, FrameError, FrameReader};
use crate::io::net::BoxStream;
use crate::proto::{ClientRequest, ClientResponse, Error, ErrorCode};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Serves one connection until the client closes it, sends garbage, or
/// `shutdown` turns true (then requests already read still get answers).
pub async fn serve(
    stream: BoxStream,
    addr: String,
    services: Arc<Services>,
    limits: ServerLimits,
    budget: RequestBudget,
    shutdown: watch::Receiver<bool>,
) {
    let logger = services.logger.clone();
    let handle = move |req| {
        let services = services.clone();
        async move { handlers::handle(&services, req).await }
    };
    serve_with(stream, addr, logger, limits, budget, shutdown, handle).await
}

/// [`serve`] with the request handler as a parameter (tests give one that
/// holds requests as long as they like).
pub(crate) async fn serve_with<S, H, F>(
    stream: S,
    addr: String,
    logger: slog::Logger,
    limits: ServerLimits,
    budget: RequestBudget,
    shutdown: watch::Receiver<bool>,
    handle: H,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: Fn(ClientRequest) -> F + Send + 'static,
    F: Future<Output = ClientResponse> + Send + 'static,
{
    let (read_half, mut write_half) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<ClientResponse>(limits.in_flight_per_connection_max);
    let writer = async move {
        while let Some(resp) = rx.recv().await {
            if frame::write_message(&mut write_half, &resp).await.is_err() {
                return;
            }
        }
    };
    let reader = Reader {
        frames: FrameReader::with_max_bytes(read_half, limits.frame_bytes_max),
        addr,
        logger,
        budget,
    };
    let reader = reader.run(limits, tx, shutdown, handle);
    // The reader ends on EOF or a bad frame; the writer then drains what the
    // handlers still send and ends when the last sender is gone.
    tokio::join!(reader, writer);
}

struct Reader<R> {
    frames: FrameReader<R>,
    addr: String,
    logger: slog::Logger,
    budget: RequestBudget,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn run<H, F>(
        mut self,
        limits: ServerLimits,
        tx: mpsc::Sender<ClientResponse>,
        mut shutdown: watch::Receiver<bool>,
        handle: H,
    ) where
        H: Fn(ClientRequest) -> F,
        F: Future<Output = ClientResponse> + Send + 'static,
    {
        let in_flight = Arc::new(Semaphore::new(limits.in_flight_per_connection_max));
        let mut handlers = JoinSet::new();
        loop {
            while handlers.try_join_next().is_some() {}
            // Waiting for memory and reading a frame are cancel safe:
            // stopping midway loses nothing that matters, since the
            // connection is closing.
            let read = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                read = self.admit_frame() => read,
            };
            let (frame, memory) = match read {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(invalid(0, format!("unreadable frame: {e}"))).await;
                    slog::debug!(self.logger, "closing client connection"; "remote" => &self.addr, "error" => %e);
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
            let Ok(slot) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let (response, tx) = (handle(req), tx.clone());
            handlers.spawn(async move {
                let resp = response.await;
                let _ = tx.send(resp).await;
                drop((slot, memory));
            });
        }
        // Finish what was started before closing: in-flight produces get
        // their answers.
        while handlers.join_next().await.is_some() {}
    }

    /// The next frame, once the budget has room for it; `None` at the end
    /// of the stream.
    async fn admit_frame(&mut self) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, FrameError> {
        let Some(len) = self.frames.next_frame_len().await? else {
            return Ok(None);
        };
        let Some(memory) = self.budget.reserve(len).await else {
            return Ok(None);
        };
        let frame = self.frames.read_frame().await?;
        // The header read above announced this frame; a clean end before
        // its body is a truncation.
        Ok(Some((frame.ok_or(FrameError::Truncated)?, memory)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{client_request, ProduceRequest};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Each request's batch; with the request's own fields, a frame is a
    /// little over this.
    const BATCH_BYTES: usize = 256 * 1024;
    const REQUESTS: u64 = 10;

    fn request(correlation_id: u64) -> ClientRequest {
        ClientRequest {
            correlation_id,
            version: 1,
            body: Some(client_request::Body::Produce(ProduceRequest {
                batch: vec![7u8; BATCH_BYTES].into(),
                ..ProduceRequest::default()
            })),
        }
    }

    /// A connection whose handler holds every request until released, a
    /// client sending [`REQUESTS`] requests, and the server's budget:
    /// returns how many requests the handler had started once everything
    /// that could move had moved, and whether the client had sent them all.
    /// Then releases them and checks that every response comes back and
    /// the budget is whole again.
    async fn started_while_held(budget_bytes: usize) -> (usize, bool) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let handle = {
            let (started, release) = (started.clone(), release.clone());
            move |req: ClientRequest| {
                started.fetch_add(1, Ordering::SeqCst);
                let release = release.clone();
                async move {
                    release.acquire().await.unwrap().forget();
                    ClientResponse {
                        correlation_id: req.correlation_id,
                        error: None,
                        body: None,
                    }
                }
            }
        };
        let budget = RequestBudget::new(budget_bytes);
        let (_stop, stopped) = watch::channel(false);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let limits = ServerLimits::default();
        tokio::spawn(serve_with(
            server,
            "test".into(),
            logger,
            limits,
            budget.clone(),
            stopped,
            handle,
        ));
        let (read_half, mut write_half) = tokio::io::split(client);
        let sender = tokio::spawn(async move {
            for id in 0..REQUESTS {
                frame::write_message(&mut write_half, &request(id))
                    .await
                    .unwrap();
            }
            write_half
        });
        // Paused time: the runtime runs every task that can run before the
        // clock moves, so after this sleep everything has settled.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let outcome = (started.load(Ordering::SeqCst), sender.is_finished());

        release.add_permits(REQUESTS as usize);
        let mut responses = FrameReader::new(read_half);
        let mut ids = Vec::new();
        for _ in 0..REQUESTS {
            let frame = responses.read_frame().await.unwrap().unwrap();
            let resp: ClientResponse = frame::decode_message(frame).unwrap();
            ids.push(resp.correlation_id);
        }
        ids.sort_unstable();
        assert_eq!(ids, (0..REQUESTS).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(budget.available_bytes(), budget_bytes);
        outcome
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_the_budget_and_the_client_is_pushed_back() {
        // 1 MiB holds three requests of a little over 256 KiB; the fourth
        // waits for memory with its body unread, so the client, with six
        // more to send than a 64 KiB pipe holds, cannot finish sending.
        assert_eq!(started_while_held(1024 * 1024).await, (3, false));
        // With room for all of them, all ten start while none is answered:
        // the limit above is the budget's, not the connection's.
        assert_eq!(started_while_held(64 * 1024 * 1024).await, (10, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_whole_budget_still_runs_alone() {
        // 100 KiB of budget, requests of 256 KiB: each takes all of it, so
        // they run one at a time rather than never.
        assert_eq!(started_while_held(100 * 1024).await, (1, false));
    }
}
