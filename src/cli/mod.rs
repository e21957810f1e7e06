//! The `weir` command line's subcommands that run against the library:
//! [`broker`] runs a broker. (`weir bench` lives in [`crate::bench`].)

pub mod broker;
pub mod logging;
