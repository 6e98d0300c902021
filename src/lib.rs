//! wharf: a declarative container reconciler for one Linux host.

// The data flow, stage by stage.

/// 1. load: manifest files in, validated services out.
pub mod manifest;

/// 2. observe: the containers on the host (and the runtime side of 4).
pub mod runtime;

/// The kernel side of 4 for networks: wharf's bridge, container addresses, NAT.
pub mod network;

/// 3. plan: a pure function of what is wanted and what runs.
pub mod plan;

/// 4. execute and record (the agent is this path too).
pub mod reconcile;

/// 5. watch: what wakes the agent.
pub mod watch;

// What the stages use: images, configs and secrets, health checks, the state
// database, Git sources.
pub mod files;
pub mod health;
pub mod image;
pub mod state;
pub mod sync;

// Host-level helpers: the state directory, bounded reads, locks, child processes, the
// log.
pub mod bounded_read;
pub mod hostroot;
pub mod lockfile;
pub mod logging;
pub mod process;
pub mod reaper;

// Output: the command line, plan styling, the Kubernetes export.
pub mod cli;
pub mod export;
pub mod style;

#[doc(hidden)]
pub mod testing;

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

/// `bytes` random bytes as hex (container id suffixes, secret versions), from
/// /dev/urandom; should it fail, from a hash of the time and the process id:
/// unique, if not unpredictable.
pub fn random_hex(bytes: usize) -> String {
    use sha2::{Digest as _, Sha256};
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buffer));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = Sha256::digest(format!("{nanos} {}", std::process::id()));
        buffer = seed.iter().copied().cycle().take(bytes).collect();
    }
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_has_two_digits_a_byte() {
        let hex = super::random_hex(16);
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(hex, super::random_hex(16));
    }
}
