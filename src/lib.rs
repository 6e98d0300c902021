//! wharf: a declarative container reconciler for one Linux host.

pub mod bounded_read;
pub mod cli;
pub mod export;
pub mod health;
pub mod hostroot;
pub mod image;
pub mod lockfile;
pub mod manifest;
pub mod plan;
pub mod process;
pub mod reconcile;
pub mod runtime;
pub mod state;
pub mod style;
pub mod sync;
#[doc(hidden)]
pub mod testing;
pub mod watch;

/// An error and its causes on one line: `cannot pull x: connection refused`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
