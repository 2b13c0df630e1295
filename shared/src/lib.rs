//! The domain every Flotilla role shares: the experiment file, variation
//! grids, run and protocol types, states, money, pace, authentication and
//! errors. Its wire form (protobuf, gRPC, TLS) is `flotilla-wire`.

pub mod atomic_file;
pub mod auth;
pub mod cache;
pub mod calls;
pub mod clock;
pub mod config;
pub mod dir_lock;
pub mod duration;
pub mod error;
pub mod grid;
pub mod money;
pub mod naming;
pub mod pace;
pub mod pricing;
pub mod protocol;
pub mod rate;
pub mod run;
pub mod status;
pub mod tier;
pub mod view;
pub mod workdir;

pub use error::{Error, Result};

/// Version reported in Hello and Health.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
