//! One client connection: a reader that decodes requests and starts each
//! as its own task (at most `in_flight_per_connection_max` at once), and a
//! writer that sends responses as they complete. A malformed frame is
//! answered with an INVALID_REQUEST error and the connection is closed: the
//! stream can no longer be trusted to be in step.
//!
//! A request's body takes its bytes from the broker-wide [`RequestBudget`]
//! as they arrive and holds them until its handler is done: when every
//! connection together has that many bytes of requests in progress,
//! readers stop reading and TCP pushes back on the clients, however many
//! connect. A client that announces a large request and sends it slowly or
//! not at all holds only what it sent, and only for
//! `request_read_timeout_ms`: then it is answered INVALID_REQUEST and the
//! connection is closed. A client that stops reading its responses is
//! closed once a response has waited that long to be written. A
//! connection with nothing in progress is closed after
//! `connection_idle_timeout_ms`.

use super::handlers::{self, Services};
use super::{BudgetHold, RequestBudget, ServerLimits};
use crate::io::frame::{self, FrameError, FrameReader};
use crate::io::net::BoxStream;
use crate::proto::{ClientRequest, ClientResponse, Error, ErrorCode};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Semaphore};
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
    // A client that stops taking its responses would otherwise keep this
    // connection, its in-flight slots and its queued responses forever:
    // each response must be taken within the time a request's body may
    // take to arrive (the client gave up on it by then anyway). Ending the
    // writer drops the queue, which the reader sees and closes.
    let write_timeout = Duration::from_millis(limits.request_read_timeout_ms);
    let (writer_logger, writer_addr) = (logger.clone(), addr.clone());
    let writer = async move {
        while let Some(resp) = rx.recv().await {
            let written =
                tokio::time::timeout(write_timeout, frame::write_message(&mut write_half, &resp))
                    .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    slog::warn!(writer_logger, "closing client connection: it does not read its responses";
                        "remote" => &writer_addr, "timeout_ms" => write_timeout.as_millis() as u64);
                    return;
                }
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
        let idle = Duration::from_millis(limits.connection_idle_timeout_ms);
        let body = Duration::from_millis(limits.request_read_timeout_ms);
        let mut handlers = JoinSet::new();
        loop {
            while handlers.try_join_next().is_some() {}
            // Waiting for a header, for memory and for a body are cancel
            // safe: stopping midway loses nothing that matters, since the
            // connection is closing.
            let header = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                // The writer gave up on the client: nothing read now
                // could be answered.
                _ = tx.closed() => break,
                header = tokio::time::timeout(idle, self.frames.next_frame_len()) => header,
            };
            let len = match header {
                Ok(Ok(Some(len))) => len,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    let _ = tx.send(invalid(0, format!("unreadable frame: {e}"))).await;
                    slog::debug!(self.logger, "closing client connection"; "remote" => &self.addr, "error" => %e);
                    break;
                }
                // Requests still in progress: the client is waiting for
                // them, not idle.
                Err(_) if !handlers.is_empty() => continue,
                Err(_) => {
                    slog::info!(self.logger, "closing idle client connection";
                        "remote" => &self.addr, "idle_ms" => limits.connection_idle_timeout_ms);
                    break;
                }
            };
            let read = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = tx.closed() => break,
                read = self.read_body(body) => read,
            };
            let (frame, memory) = match read {
                Ok(f) => f,
                Err(BodyError::Frame(e)) => {
                    let _ = tx.send(invalid(0, format!("unreadable frame: {e}"))).await;
                    slog::debug!(self.logger, "closing client connection"; "remote" => &self.addr, "error" => %e);
                    break;
                }
                Err(BodyError::Closed) => break,
                Err(BodyError::TimedOut { received_bytes }) => {
                    let message = format!(
                        "request of {len} bytes not received within {} ms \
                         (request_read_timeout_ms; {received_bytes} bytes arrived): \
                         closing the connection",
                        limits.request_read_timeout_ms
                    );
                    slog::warn!(self.logger, "closing client connection: request body too slow";
                        "remote" => &self.addr, "frame_bytes" => len,
                        "received_bytes" => received_bytes,
                        "timeout_ms" => limits.request_read_timeout_ms);
                    let _ = tx.send(invalid(0, message)).await;
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
                // The request is done with: its bytes go back to the
                // budget now, not once the client takes the response (a
                // client that does not read must not hold what others
                // need; the response queue is bounded by the slots).
                drop(memory);
                let _ = tx.send(resp).await;
                drop(slot);
            });
        }
        // Finish what was started before closing: in-flight produces get
        // their answers.
        while handlers.join_next().await.is_some() {}
    }

    /// The body of the frame whose header is in, with the
    /// budget it holds: every read is counted before the next one, and the
    /// reads together may wait at most `timeout` for the stream (waiting
    /// for the budget does not count, since that is the broker's doing).
    async fn read_body(&mut self, timeout: Duration) -> Result<(Bytes, BudgetHold), BodyError> {
        let mut hold = BudgetHold::default();
        let mut left = timeout;
        loop {
            let received = self.frames.buffered_payload_bytes();
            if !self.budget.cover(&mut hold, received).await {
                return Err(BodyError::Closed);
            }
            if let Some(frame) = self.frames.try_take_frame().map_err(BodyError::Frame)? {
                return Ok((frame, hold));
            }
            let started = tokio::time::Instant::now();
            let read = tokio::time::timeout(left, self.frames.read_more()).await;
            match read {
                Err(_) => {
                    return Err(BodyError::TimedOut {
                        received_bytes: received,
                    })
                }
                Ok(Err(e)) => return Err(BodyError::Frame(e)),
                // The header announced this frame: a clean end before its
                // body is a truncation.
                Ok(Ok(0)) => return Err(BodyError::Frame(FrameError::Truncated)),
                Ok(Ok(_)) => {}
            }
            left = left.saturating_sub(started.elapsed());
        }
    }
}

/// Why a request's body was not read.
enum BodyError {
    Frame(FrameError),
    TimedOut {
        received_bytes: usize,
    },
    /// The budget closed (never happens).
    Closed,
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
    const BATCH_BYTES: usize = 200 * 1024;
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
        // 1 MiB holds five requests of a little over 200 KiB (each within
        // its share, a quarter of the budget); the sixth takes the rest and
        // overdraws for what is missing; the seventh waits for memory with
        // its body (beyond one read) unread, so the client, with four more
        // to send than a 64 KiB pipe holds, cannot finish sending.
        assert_eq!(started_while_held(1024 * 1024).await, (6, false));
        // With room for all of them, all ten start while none is answered:
        // the limit above is the budget's, not the connection's.
        assert_eq!(started_while_held(64 * 1024 * 1024).await, (10, true));
    }

    #[tokio::test(start_paused = true)]
    async fn an_announced_body_holds_only_what_arrived_and_times_out() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let budget = RequestBudget::new(1024 * 1024);
        let (_stop, stopped) = watch::channel(false);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let limits = ServerLimits {
            request_read_timeout_ms: 5_000,
            ..ServerLimits::default()
        };
        let handle = |req: ClientRequest| async move {
            ClientResponse {
                correlation_id: req.correlation_id,
                error: None,
                body: None,
            }
        };
        let served = tokio::spawn(serve_with(
            server,
            "test".into(),
            logger,
            limits,
            budget.clone(),
            stopped,
            handle,
        ));
        // Announces 16 MiB and sends 1000 bytes of it: the budget lends
        // those 1000 bytes, not 16 MiB.
        use tokio::io::AsyncWriteExt;
        client
            .write_all(&(16u32 << 20).to_be_bytes())
            .await
            .unwrap();
        client.write_all(&[0u8; 1000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(4_000)).await;
        assert_eq!(budget.available_bytes(), 1024 * 1024 - 1000);
        assert!(!served.is_finished());
        // Then the read timeout closes the connection and returns them.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert!(served.is_finished());
        assert_eq!(budget.available_bytes(), 1024 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_whole_budget_still_runs_alone() {
        // 100 KiB of budget, requests of 200 KiB: each takes its share and
        // the overdraft, so they run one at a time rather than never.
        assert_eq!(started_while_held(100 * 1024).await, (1, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_its_responses_holds_no_budget_and_is_closed() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let budget_bytes = 1024 * 1024;
        let budget = RequestBudget::new(budget_bytes);
        let (_stop, stopped) = watch::channel(false);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let limits = ServerLimits {
            request_read_timeout_ms: 5_000,
            ..ServerLimits::default()
        };
        // Answers of 64 KiB: the first fills the pipe the client never
        // reads, the next 64 fill the queue.
        let handle = |req: ClientRequest| async move {
            ClientResponse {
                correlation_id: req.correlation_id,
                error: Some(Error {
                    code: ErrorCode::InvalidRequest as i32,
                    message: "x".repeat(64 * 1024),
                    leader_id: 0,
                }),
                body: None,
            }
        };
        let served = tokio::spawn(serve_with(
            server,
            "test".into(),
            logger,
            limits,
            budget.clone(),
            stopped,
            handle,
        ));
        let (_unread, mut write_half) = tokio::io::split(client);
        let sender = tokio::spawn(async move {
            for id in 0..1000 {
                if frame::write_message(&mut write_half, &request(id))
                    .await
                    .is_err()
                {
                    return id;
                }
            }
            1000
        });
        // Every request read was handled; before, the 64 whose answers
        // did not fit the queue held their bytes (the whole budget) until
        // the client read. Now at most the request read while waiting for
        // an in-flight slot holds any.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(
            budget.available_bytes() >= budget_bytes - budget.share_bytes_max(),
            "{} of {budget_bytes} bytes free",
            budget.available_bytes()
        );
        assert!(!served.is_finished());
        // An answer not taken within request_read_timeout_ms closes the
        // connection; before, it stayed open for good.
        tokio::time::sleep(Duration::from_millis(5_000)).await;
        assert!(served.is_finished(), "the connection stays open");
        assert_eq!(budget.available_bytes(), budget_bytes);
        assert!(sender.await.unwrap() < 1000);
    }
}
