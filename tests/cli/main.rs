//! Tests that run the real `wharf` binary, one module per command.

mod common;
mod schema;
mod validate;
