//! Benchmark tools that drive tandem from outside, as a user's client would.

pub mod compare;
pub mod model;
pub mod roofline;
pub mod serve;
pub mod spec;
mod stats;
mod svg;

pub use stats::Summary;
