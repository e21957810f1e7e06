//! The native client. For now: [`connection::Connection`], a pipelined
//! request/response connection to one broker.

pub mod connection;

pub use connection::{ClientError, Connection};
