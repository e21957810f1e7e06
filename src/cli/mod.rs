//! The `weir` command line's subcommands that run against the library:
//! [`broker`] runs a broker; [`topic`], [`produce`], [`consume`] and
//! [`cluster`] talk to a cluster through [`crate::client`]. (`weir bench`
//! lives in [`crate::bench`].)

pub mod broker;
pub mod cluster;
pub mod consume;
pub mod logging;
pub mod output;
pub mod produce;
pub mod topic;
