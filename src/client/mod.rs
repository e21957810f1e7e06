//! The native client: [`Producer`], [`Consumer`] and [`Admin`] over
//! pipelined [`Connection`]s, sharing a [`metadata::Client`] that bootstraps
//! from one or more addresses and discovers the rest of the cluster.

pub mod admin;
pub mod connection;
pub mod consumer;
pub mod metadata;
pub mod partitioner;
pub mod producer;

pub use admin::{Admin, BrokerDesc, ClusterDesc, LogDir, PartitionDesc, Problem, TopicDesc};
pub use connection::{ClientError, Connection};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, StartAt};
pub use metadata::{Client, ClientConfig};
pub use producer::{Acks, Delivery, Producer, ProducerConfig, ProducerRecord};

use crate::proto::ErrorCode;
use std::fmt;

/// What a client operation can fail with. `Display` is one line saying what
/// went wrong (and, where the broker said so, how to fix it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The broker answered with an error.
    Broker { code: ErrorCode, message: String },
    /// No broker could be reached.
    Unreachable(String),
    /// A connection broke or a request timed out, and retries ran out.
    Transport(String),
    /// A record was not acknowledged within the delivery timeout.
    DeliveryTimeout { after_ms: u64, last_error: String },
    /// Bad input from the caller (a record too large, an unknown partition).
    Invalid(String),
    /// The producer or consumer was closed.
    Closed,
}

impl Error {
    pub(crate) fn broker(e: &crate::proto::Error) -> Error {
        let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unknown);
        let message = if e.message.is_empty() {
            format!("broker error {}", code.as_str_name())
        } else {
            e.message.clone()
        };
        Error::Broker { code, message }
    }

    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Worth retrying after a metadata refresh.
    pub fn retriable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => retriable_code(*code),
            Error::Transport(_) | Error::Unreachable(_) => true,
            _ => false,
        }
    }
}

pub(crate) fn retriable_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeader
            | ErrorCode::NotController
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::RequestTimedOut
            | ErrorCode::Throttled
            | ErrorCode::BrokerShuttingDown
            | ErrorCode::StorageError
            | ErrorCode::UnknownPartition
            | ErrorCode::BrokerNotReady
            | ErrorCode::OutOfSpace
    )
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Broker { message, .. } => write!(f, "{message}"),
            Error::Unreachable(m) | Error::Transport(m) | Error::Invalid(m) => write!(f, "{m}"),
            Error::DeliveryTimeout {
                after_ms,
                last_error,
            } => write!(
                f,
                "record not acknowledged within the delivery timeout of {after_ms} ms \
                 (last error: {last_error}); check that the partition has a live leader"
            ),
            Error::Closed => write!(f, "the client was closed"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::Transport(e.to_string())
    }
}
