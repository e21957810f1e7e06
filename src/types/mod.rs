//! Types every layer shares: the event a producer writes and Kafka's
//! RecordBatch v2, the format in which Weir stores and moves events.

pub mod record;
mod varint;

pub use record::{
    split_batches, BatchBuilder, BatchHeader, ControlType, Event, Header, Record, RecordBatch,
    RecordError,
};
