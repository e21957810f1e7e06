//! Length-prefixed frames: a 4-byte big-endian payload length, then the
//! payload (one protobuf message of `proto/weir.proto`).
//!
//! Everything read here comes from the network, so nothing here panics on
//! it: a length above the cap is refused before any memory is set aside for
//! it, and the buffer only grows as bytes actually arrive, so a peer that
//! claims a large frame and sends little costs what it sent, not what it
//! claimed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The default cap on a frame's payload. Large enough for a fetch response
/// carrying several partitions' worth of batches, small enough that a
/// corrupt or hostile length cannot exhaust memory.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The length prefix.
const HEADER_BYTES: usize = 4;

/// How much the read buffer grows per read at most. Reading in chunks lets
/// one read pick up many small pipelined frames, and bounds the memory a
/// peer can make us reserve ahead of the bytes it actually sends.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The room a read always has at least. Frames are split off the buffer
/// and handed out, so what is left of its allocation shrinks with every
/// frame; reading into only what the next header needs (4 bytes) made
/// half the reads of a busy peer link return a header or a few bytes, and
/// a second read follow for the body.
const READ_ROOM_MIN_BYTES: usize = 16 * 1024;

/// The default bound on the bytes a [`FrameWriter`] gathers before writing
/// them out: enough to batch many requests into one syscall, small enough
/// not to delay the first of them noticeably.
pub const BATCH_BYTES_MAX: usize = 256 * 1024;

/// Why a frame could not be read, written or decoded.
#[derive(Debug)]
pub enum FrameError {
    /// A frame's length is above the cap (read: the peer sent it; write: the
    /// message is too big to send).
    TooLarge {
        /// The frame's payload length.
        len_bytes: usize,
        /// The cap it broke.
        max_bytes: usize,
    },
    /// The stream ended inside a frame.
    Truncated,
    /// The payload is not a valid message of the expected type.
    Decode(String),
    /// The stream failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge {
                len_bytes,
                max_bytes,
            } => write!(
                f,
                "frame of {len_bytes} bytes exceeds the limit of {max_bytes} bytes: \
                 send smaller requests (fewer partitions or a lower max_bytes), or the \
                 peer does not speak Weir's protocol"
            ),
            FrameError::Truncated => write!(
                f,
                "connection closed in the middle of a frame: the peer crashed or \
                 hung up mid-message; reconnect and retry"
            ),
            FrameError::Decode(e) => write!(
                f,
                "frame payload is not a valid message ({e}): the peer speaks another \
                 protocol or version"
            ),
            FrameError::Io(e) => write!(f, "connection failed: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Checks a payload length against a cap.
fn check_len(len_bytes: usize, max_bytes: usize) -> Result<(), FrameError> {
    if len_bytes > max_bytes {
        return Err(FrameError::TooLarge {
            len_bytes,
            max_bytes,
        });
    }
    Ok(())
}

/// The header for a payload of `len_bytes`, refusing lengths above the cap
/// (which also keeps them within the header's 32 bits).
/// The length prefix of a `len_bytes` payload, if within `max_bytes`.
pub fn header(len_bytes: usize, max_bytes: usize) -> Result<[u8; HEADER_BYTES], FrameError> {
    check_len(len_bytes, max_bytes)?;
    let len = u32::try_from(len_bytes).map_err(|_| FrameError::TooLarge {
        len_bytes,
        max_bytes: u32::MAX as usize,
    })?;
    Ok(len.to_be_bytes())
}

/// Reads frames from a byte stream through one reusable buffer.
///
/// `read_frame` is cancel-safe: everything received lives in the reader, not
/// in the future, so dropping the future (say, in a `select!` with a
/// shutdown signal) loses no bytes and the next call picks up where it was.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader refusing frames above [`FRAME_BYTES_MAX`].
    pub fn new(inner: R) -> Self {
        Self::with_max_bytes(inner, FRAME_BYTES_MAX)
    }

    /// A reader refusing frames above `max_bytes`.
    pub fn with_max_bytes(inner: R, max_bytes: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            max_bytes,
        }
    }

    /// Changes the cap for the frames still to come (a peer connection
    /// takes only a small first frame until it has said who it is).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// The next frame's payload; `None` when the stream ends cleanly between
    /// frames. An end inside a frame is [`FrameError::Truncated`].
    ///
    /// The payload shares the reader's buffer, so reading costs no copy and
    /// no allocation beyond the buffer's growth.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.next_frame_len().await?.is_none() {
            return Ok(None);
        }
        // The header is in: the stream ending before the body does is a
        // truncation.
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
    }

    /// Reads until the next frame's header is in and returns the payload
    /// length it announces (checked against the cap), without reading the
    /// payload: a server can then wait for memory before the body arrives.
    /// `Ok(None)` at a clean end of the stream. Cancel safe: bytes already
    /// read stay buffered.
    pub async fn next_frame_len(&mut self) -> Result<Option<usize>, FrameError> {
        loop {
            if let Some(len) = self.announced_len()? {
                return Ok(Some(len));
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(FrameError::Truncated);
            }
        }
    }

    /// Bytes of the next frame's payload already buffered, at most its
    /// announced length; 0 until its header is in. A server counts a
    /// request's memory by this as its body arrives.
    pub fn buffered_payload_bytes(&self) -> usize {
        match self.announced_len() {
            Ok(Some(len)) => (self.buf.len() - HEADER_BYTES).min(len),
            _ => 0,
        }
    }

    /// The next frame if it has arrived whole, without reading.
    pub fn try_take_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.take_frame()
    }

    /// Reads once more from the stream into the buffer (at most a chunk
    /// beyond what the buffer holds); returns how many bytes arrived, 0 at
    /// the end of the stream. Cancel safe, like [`Self::read_frame`].
    pub async fn read_more(&mut self) -> Result<usize, FrameError> {
        self.fill().await
    }

    /// The payload length announced by the buffered header, if it is all in.
    fn announced_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(header) = self.buf.get(..HEADER_BYTES) else {
            return Ok(None);
        };
        let mut be = [0u8; HEADER_BYTES];
        be.copy_from_slice(header);
        // A u32 always fits a usize on the platforms Weir runs on; saturate
        // rather than assume, so a 16-bit target still refuses it as too big.
        let len = usize::try_from(u32::from_be_bytes(be)).unwrap_or(usize::MAX);
        check_len(len, self.max_bytes)?;
        Ok(Some(len))
    }

    /// Splits the first frame off the buffer if it has arrived whole.
    fn take_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = self.announced_len()? else {
            return Ok(None);
        };
        if self.buf.len() - HEADER_BYTES < len {
            return Ok(None);
        }
        self.buf.advance(HEADER_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Reads more bytes into the buffer; returns how many (0 at the end).
    async fn fill(&mut self) -> Result<usize, FrameError> {
        // Grow toward the end of the frame being read (checked against the
        // cap already), but by one chunk at most: memory follows the bytes
        // that arrive (at most twice them plus a chunk, as growth doubles),
        // not the length a peer claims.
        let wanted = match self.announced_len()? {
            Some(len) => HEADER_BYTES.saturating_add(len) - self.buf.len(),
            None => HEADER_BYTES - self.buf.len(),
        };
        self.buf
            .reserve(wanted.clamp(READ_ROOM_MIN_BYTES, READ_CHUNK_BYTES));
        Ok(self.inner.read_buf(&mut self.buf).await?)
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying stream; bytes already buffered are lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes one frame and flushes it. Refuses payloads above
/// [`FRAME_BYTES_MAX`], which the peer's reader would refuse anyway.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> Result<(), FrameError> {
    let header = header(payload.len(), FRAME_BYTES_MAX)?;
    // One gathered write, so header and payload leave in one segment when
    // they fit rather than as a 4-byte packet of their own.
    let mut both = Buf::chain(&header[..], payload);
    w.write_all_buf(&mut both).await?;
    w.flush().await?;
    Ok(())
}

/// Encodes `msg` as one frame, writes and flushes it.
pub async fn write_message<W, M>(w: &mut W, msg: &M) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    M: prost::Message,
{
    let mut buf = encode_message(msg)?;
    w.write_all_buf(&mut buf).await?;
    w.flush().await?;
    Ok(())
}

/// `msg` as one frame, length prefix included.
pub fn encode_message<M: prost::Message>(msg: &M) -> Result<BytesMut, FrameError> {
    let mut buf = BytesMut::new();
    let header = header(msg.encoded_len(), FRAME_BYTES_MAX)?;
    encode_frame(&mut buf, header, msg)?;
    Ok(buf)
}

/// Writes frames encoded ahead, length prefixes included (see
/// [`encode_message`]), one after another, and flushes.
pub async fn write_encoded<W, F>(w: &mut W, frames: &[F]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    F: AsRef<[u8]>,
{
    for f in frames {
        w.write_all(f.as_ref()).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Decodes a frame's payload as a `M`. Passing the `Bytes` that
/// [`FrameReader::read_frame`] returned lets `bytes` fields share it.
pub fn decode_message<M: prost::Message + Default>(bytes: impl Buf) -> Result<M, FrameError> {
    M::decode(bytes).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Appends `msg` as one frame, under its already checked `header`, to `buf`.
fn encode_frame<M: prost::Message>(
    buf: &mut BytesMut,
    header: [u8; HEADER_BYTES],
    msg: &M,
) -> Result<(), FrameError> {
    let start = buf.len();
    // The header holds the encoded length; no need to measure again.
    buf.reserve(HEADER_BYTES + u32::from_be_bytes(header) as usize);
    buf.put_slice(&header);
    // Cannot fail: `reserve` made room for `encoded_len` bytes, which is all
    // prost checks. Handled rather than unwrapped all the same, dropping the
    // partial frame so a batch never carries a header without its payload.
    msg.encode(buf).map_err(|e| {
        buf.truncate(start);
        FrameError::Decode(format!("encoding failed: {e}"))
    })
}

/// Gathers frames and writes them out together, so that a client pipelining
/// many requests (or a broker sending many Raft batches) pays one write per
/// batch instead of one per frame.
///
/// Frames go out in the order pushed. They leave when [`FrameWriter::flush`]
/// is called, or earlier when the batch would grow past its byte bound, which
/// keeps the memory held per connection bounded by that bound (or one frame,
/// if a single frame is larger).
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: BytesMut,
    batch_bytes_max: usize,
    frame_bytes_max: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer batching up to [`BATCH_BYTES_MAX`], with frames up to
    /// [`FRAME_BYTES_MAX`].
    pub fn new(inner: W) -> Self {
        Self::with_limits(inner, BATCH_BYTES_MAX, FRAME_BYTES_MAX)
    }

    /// A writer batching up to `batch_bytes_max`, refusing frames above
    /// `frame_bytes_max`.
    pub fn with_limits(inner: W, batch_bytes_max: usize, frame_bytes_max: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            batch_bytes_max,
            frame_bytes_max,
        }
    }

    /// Queues `msg` as a frame; writes the batch out first if it would grow
    /// past the bound.
    pub async fn push<M: prost::Message>(&mut self, msg: &M) -> Result<(), FrameError> {
        let len = msg.encoded_len();
        let header = header(len, self.frame_bytes_max)?;
        self.make_room(HEADER_BYTES + len).await?;
        encode_frame(&mut self.buf, header, msg)?;
        self.flush_if_full().await
    }

    /// Queues `payload` as a frame, like [`FrameWriter::push`].
    pub async fn push_frame(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let header = header(payload.len(), self.frame_bytes_max)?;
        self.make_room(HEADER_BYTES + payload.len()).await?;
        self.buf.put_slice(&header);
        self.buf.put_slice(payload);
        self.flush_if_full().await
    }

    /// Writes out every queued frame and flushes the stream.
    ///
    /// Cancel-safe in the sense that matters: bytes leave the buffer only
    /// once written, so after a cancelled flush the next one sends the rest.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        self.inner.write_all_buf(&mut self.buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Flushes the batch if adding `frame_bytes` would take it past the
    /// bound, so a large frame does not sit behind a full batch.
    async fn make_room(&mut self, frame_bytes: usize) -> Result<(), FrameError> {
        if !self.buf.is_empty() && self.buf.len() + frame_bytes > self.batch_bytes_max {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush_if_full(&mut self) -> Result<(), FrameError> {
        if self.buf.len() >= self.batch_bytes_max {
            self.flush().await?;
        }
        Ok(())
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying stream; frames not yet flushed are lost.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{client_request, ClientRequest, MetadataRequest};
    use quickcheck::{QuickCheck, TestResult};
    use tokio::io::duplex;

    fn request(correlation_id: u64) -> ClientRequest {
        ClientRequest {
            correlation_id,
            version: 1,
            body: Some(client_request::Body::Metadata(MetadataRequest {
                topics: vec!["orders".into()],
            })),
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut w, r) = duplex(64);
        let mut reader = FrameReader::new(r);
        let big = vec![7u8; 1000];
        let writer = async {
            write_frame(&mut w, b"hello").await.unwrap();
            // An empty frame is legal: a default protobuf message encodes
            // to nothing.
            write_frame(&mut w, b"").await.unwrap();
            write_frame(&mut w, &big).await.unwrap();
            write_message(&mut w, &request(42)).await.unwrap();
            drop(w);
        };
        let read = async {
            let mut frames = Vec::new();
            while let Some(f) = reader.read_frame().await.unwrap() {
                frames.push(f);
            }
            frames
        };
        let ((), frames) = tokio::join!(writer, read);
        assert_eq!(frames.len(), 4);
        assert_eq!(&frames[0][..], b"hello");
        assert!(frames[1].is_empty());
        assert_eq!(&frames[2][..], &big[..]);
        let decoded: ClientRequest = decode_message(frames[3].clone()).unwrap();
        assert_eq!(decoded, request(42));
    }

    #[tokio::test]
    async fn a_frame_length_is_known_before_its_body_arrives() {
        let (mut w, r) = duplex(1 << 20);
        let mut reader = FrameReader::new(r);
        // The header and 3 of 10 payload bytes: the length is known, the
        // frame is not whole.
        w.write_all(&10u32.to_be_bytes()).await.unwrap();
        w.write_all(b"abc").await.unwrap();
        assert_eq!(reader.next_frame_len().await.unwrap(), Some(10));
        // Asking again reads nothing more and gives the same answer.
        assert_eq!(reader.next_frame_len().await.unwrap(), Some(10));
        w.write_all(b"defghij").await.unwrap();
        assert_eq!(
            &reader.read_frame().await.unwrap().unwrap()[..],
            b"abcdefghij"
        );
        // A header cut short is a truncation; no header at all, the end.
        w.write_all(&[0, 0]).await.unwrap();
        drop(w);
        assert!(matches!(
            reader.next_frame_len().await,
            Err(FrameError::Truncated)
        ));
        let (w, r) = duplex(64);
        drop(w);
        assert_eq!(FrameReader::new(r).next_frame_len().await.unwrap(), None);
        // An oversize length is refused here too.
        let (mut w, r) = duplex(64);
        w.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        assert!(matches!(
            FrameReader::new(r).next_frame_len().await,
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn oversize_length_refused_before_allocating() {
        let (mut w, r) = duplex(64);
        let mut reader = FrameReader::new(r);
        w.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        w.write_all(b"abc").await.unwrap();
        match reader.read_frame().await {
            Err(FrameError::TooLarge {
                len_bytes,
                max_bytes,
            }) => assert_eq!((len_bytes, max_bytes), (1 << 30, FRAME_BYTES_MAX)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(reader.buf.capacity() <= READ_CHUNK_BYTES);
    }

    /// Records the room each read is given.
    struct RoomRecorder<R> {
        inner: R,
        rooms: Vec<usize>,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for RoomRecorder<R> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let room = buf.remaining();
            self.rooms.push(room);
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn every_read_has_room_for_many_frames() {
        let (mut w, r) = duplex(1 << 20);
        for i in 0..200u32 {
            let body = vec![i as u8; 1000 + i as usize];
            w.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            w.write_all(&body).await.unwrap();
        }
        drop(w);
        let mut reader = FrameReader::new(RoomRecorder {
            inner: r,
            rooms: Vec::new(),
        });
        let mut frames = 0u32;
        while let Some(f) = reader.read_frame().await.unwrap() {
            assert_eq!(f.len(), 1000 + frames as usize);
            frames += 1;
        }
        assert_eq!(frames, 200);
        let rooms = &reader.get_mut().rooms;
        assert!(
            rooms.iter().all(|&r| r >= READ_ROOM_MIN_BYTES),
            "reads given less room than {READ_ROOM_MIN_BYTES}: {:?}",
            rooms
                .iter()
                .filter(|&&r| r < READ_ROOM_MIN_BYTES)
                .collect::<Vec<_>>()
        );
        // So one read picks up many frames: ~240 KB in far fewer reads.
        assert!(rooms.len() < 40, "{} reads", rooms.len());
    }

    #[tokio::test]
    async fn memory_follows_bytes_received_not_claimed() {
        // Room for everything sent, as nobody reads until it is all written.
        let (mut w, r) = duplex(1024);
        let mut reader = FrameReader::new(r);
        // Under the cap, but far more than is sent before hanging up.
        w.write_all(&(FRAME_BYTES_MAX as u32).to_be_bytes())
            .await
            .unwrap();
        w.write_all(&[1u8; 100]).await.unwrap();
        drop(w);
        assert!(matches!(
            reader.read_frame().await,
            Err(FrameError::Truncated)
        ));
        // Growth doubles, so the bound is twice what arrived plus a chunk.
        assert!(reader.buf.capacity() <= 2 * (104 + READ_CHUNK_BYTES));
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_truncated() {
        for sent in [&[0u8, 0][..], &[0, 0, 0, 10, 1, 2, 3][..]] {
            let (mut w, r) = duplex(64);
            let mut reader = FrameReader::new(r);
            w.write_all(sent).await.unwrap();
            drop(w);
            let got = reader.read_frame().await;
            assert!(matches!(got, Err(FrameError::Truncated)), "{got:?}");
        }
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        // An unfinished varint; field 10 (a message) claiming more bytes than
        // follow; field 1 with the reserved wire type 7.
        for garbage in [&[0xffu8, 0xff, 0xff][..], &[0x52, 0x05, 0x01], &[0x0f]] {
            let got = decode_message::<ClientRequest>(Bytes::copy_from_slice(garbage));
            match got {
                Err(e @ FrameError::Decode(_)) => {
                    assert!(e.to_string().contains("not a valid message"))
                }
                other => panic!("expected Decode for {garbage:?}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn writer_refuses_oversize_frames() {
        let (w, _r) = duplex(64);
        let mut writer = FrameWriter::with_limits(w, 1024, 10);
        let got = writer.push_frame(&[0u8; 11]).await;
        assert!(matches!(
            got,
            Err(FrameError::TooLarge {
                len_bytes: 11,
                max_bytes: 10
            })
        ));
        assert!(matches!(
            writer.push(&request(1)).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(writer.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn writer_batches_until_flush_or_bound() {
        let (w, r) = duplex(4096);
        let mut writer = FrameWriter::with_limits(w, 100, FRAME_BYTES_MAX);
        let mut reader = FrameReader::new(r);
        writer.push(&request(1)).await.unwrap();
        writer.push(&request(2)).await.unwrap();
        assert!(writer.buffered_bytes() > 0, "small frames wait for flush");
        // The third frame would pass the bound: the first two go out.
        writer.push_frame(&[9u8; 90]).await.unwrap();
        assert_eq!(writer.buffered_bytes(), HEADER_BYTES + 90);
        for id in [1, 2] {
            let frame = reader.read_frame().await.unwrap().unwrap();
            assert_eq!(decode_message::<ClientRequest>(frame).unwrap(), request(id));
        }
        writer.flush().await.unwrap();
        assert_eq!(writer.buffered_bytes(), 0);
        assert_eq!(reader.read_frame().await.unwrap().unwrap().len(), 90);
    }

    #[tokio::test]
    async fn cancelled_read_loses_nothing() {
        let (mut w, r) = duplex(64);
        let mut reader = FrameReader::new(r);
        w.write_all(&[0, 0, 0, 3, b'a']).await.unwrap();
        // Poll the read once, then drop it, as a losing `select!` arm would.
        tokio::select! {
            biased;
            got = reader.read_frame() => panic!("frame is incomplete: {got:?}"),
            () = std::future::ready(()) => {}
        }
        w.write_all(b"bc").await.unwrap();
        assert_eq!(&reader.read_frame().await.unwrap().unwrap()[..], b"abc");
    }

    /// Any payloads, pushed through a writer with any batch bound and read
    /// through a small pipe (so reads split frames anywhere), come out whole
    /// and in order.
    fn batched_round_trip(payloads: Vec<Vec<u8>>, batch_bytes_max: u16) -> TestResult {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = runtime.block_on(async {
            let (w, r) = duplex(64);
            let mut writer = FrameWriter::with_limits(w, batch_bytes_max.into(), FRAME_BYTES_MAX);
            let mut reader = FrameReader::new(r);
            let write = async {
                for p in &payloads {
                    writer.push_frame(p).await.unwrap();
                }
                writer.flush().await.unwrap();
                drop(writer);
            };
            let read = async {
                let mut got = Vec::new();
                while let Some(f) = reader.read_frame().await.unwrap() {
                    got.push(f.to_vec());
                }
                got
            };
            tokio::join!(write, read).1
        });
        TestResult::from_bool(got == payloads)
    }

    #[test]
    fn quickcheck_batched_round_trip() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(300),
            batched_round_trip as fn(Vec<Vec<u8>>, u16) -> TestResult,
        );
    }
}
