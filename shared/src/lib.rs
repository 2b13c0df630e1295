//! Everything both Flotilla roles need: the experiment file, variation grids,
//! run types, states and their wire form, authentication and errors.

pub mod atomic_file;
pub mod auth;
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
pub mod tls;
pub mod wire;
pub mod workdir;

/// Generated protobuf and gRPC code (proto/flotilla/v1/flotilla.proto).
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("flotilla.v1");
}

pub use error::{Error, Result};

/// Version reported in Hello and Health.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
