//! wharf: a declarative container reconciler for one Linux host.

pub mod cli;
pub mod image;
pub mod manifest;
pub mod plan;
pub mod runtime;
