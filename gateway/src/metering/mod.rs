//! Metering and spend: what each call was and cost (`calls`), the live runs
//! and their ledgers of calls (`runs`), and what each run may spend
//! (`spend`, ARCHITECTURE.md, invariant 1).

pub mod calls;
pub mod runs;
pub mod spend;
