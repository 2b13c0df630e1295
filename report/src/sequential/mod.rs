//! Adaptive sampling with anytime-valid statistics (ARCHITECTURE.md,
//! "Adaptive sampling"): confidence sequences, and the decisions an
//! adaptive experiment takes with them as results come in. Pure functions
//! over results; the coordinator feeds them, the report reads them.

mod decisions;
mod sequences;
#[cfg(test)]
mod simulations;

pub use decisions::{Plan, Question, SequentialAnalysis, Slot, Standing};
pub use sequences::Sequence;
