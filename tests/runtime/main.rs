//! The libcontainer runtime against real containers (run as root).

#[path = "../support/mod.rs"]
mod support;

mod failures;
mod harness;
mod isolation;
mod lifecycle;
mod storage;
