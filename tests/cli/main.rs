//! Tests that run the real `wharf` binary, one module per command.

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod apply;
mod common;
mod containers;
mod depends_on;
mod files;
mod host_safety;
mod images;
mod jobs;
mod logs;
mod monitor;
mod network;
mod schema;
mod sync;
mod trust;
mod validate;
