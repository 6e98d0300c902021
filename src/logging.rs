//! The process's log: `tracing` events on stderr, as lines for people or as one JSON
//! object per event for log shippers. wharf's own events are shown from the chosen
//! level up; those of the libraries it uses (libcontainer's, oci-client's...) only at
//! `debug` and `trace`, where they help to follow a container build or a pull.
//!
//! Events carry structured fields where they are about something: `service`,
//! `replica`, `container`, `step` (create, replace, restart, remove), `reason`,
//! `registry`, `file`. The message reads on its own (the same words the agent always
//! logged), so the text format is readable without the fields and tests of the log
//! still find their phrases.
//!
//! Nothing is logged in a forked copy of the process (`runtime::forked`, where
//! containers are built). A copy has only the thread that forked, but every lock as the
//! other threads held it at that instant: the subscriber's stderr lock, the registry's
//! thread-id allocator... one held by a thread that was not copied stays locked for
//! ever, and the copy would hang inside a log call. Whether a log call happens there is
//! not left to the code that runs in the copy (libcontainer logs from inside its
//! build): [`forbid_in_this_process`], the copy's first act, makes every event and span
//! a no-op before it reaches the subscriber, in two independent ways:
//! - the copy's thread gets `Dispatch::none()` as its default dispatcher, so no event
//!   of that thread (or of the processes libcontainer clones from it, which inherit
//!   its memory) ever calls into the subscriber;
//! - a process-wide flag that the subscriber's outermost layer (`Gate`) reads before
//!   anything else, for any thread the copy might start: the gate never lets a call
//!   site be cached as "always enabled", so `enabled` is asked at every event and
//!   span, and it refuses them all once the flag is set.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// Set in a forked copy of the process: nothing may be logged there.
static FORBIDDEN: AtomicBool = AtomicBool::new(false);

/// How events are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `2026-12-02T08:00:00.000000Z  INFO created web/0: new service service="web" ...`
    Text,
    /// One JSON object per line: timestamp, level, message, fields, target.
    Json,
}

/// The level a `RUST_LOG` value names: error, warn, info, debug or trace, in any case.
/// Filter directives (`wharf=debug,hyper=warn`) are not understood: None.
pub fn parse_level(text: &str) -> Option<LevelFilter> {
    match text.trim().to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

/// Installs the process's subscriber (once, in `main`): events at `level` and above on
/// stderr, in `format`, with ANSI colours when `ansi` (text only).
pub fn install(level: LevelFilter, format: Format, ansi: bool) -> Result<(), TryInitError> {
    let gate = Gate { level };
    // The target (`libcontainer::process::...`) says where a library's event comes
    // from; wharf's own lines do without it unless the level shows libraries too.
    let targets = level >= LevelFilter::DEBUG;
    match format {
        Format::Text => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(targets)
                    .with_ansi(ansi),
            )
            .with(gate)
            .try_init(),
        Format::Json => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .with(gate)
            .try_init(),
    }
}

/// Makes every later event and span of this process a no-op, before it reaches the
/// subscriber. Called first thing in a forked copy of the process (see the module
/// documentation); there is no way back.
pub fn forbid_in_this_process() {
    FORBIDDEN.store(true, Ordering::SeqCst);
    // For good: dropping the guard would give this thread the process's subscriber
    // back. Forgetting it leaks at most the thread's previous default, in a copy that
    // ends soon.
    std::mem::forget(tracing::dispatcher::set_default(&tracing::Dispatch::none()));
}

/// Whether this process may log (false in a forked copy).
fn allowed() -> bool {
    !FORBIDDEN.load(Ordering::Relaxed)
}

/// The subscriber's outermost layer: the level, the libraries' cap at debug, and the
/// fork rule. Outermost, so its `enabled` is asked before any other layer or the
/// registry does anything.
struct Gate {
    level: LevelFilter,
}

impl Gate {
    fn shows(&self, meta: &Metadata<'_>) -> bool {
        shows(self.level, meta.target(), *meta.level())
    }
}

/// Whether the configured `level` shows an event or span of `target` at `at`: wharf's
/// from the level up, the libraries' only when the level is debug or trace.
fn shows(level: LevelFilter, target: &str, at: Level) -> bool {
    let own = target == "wharf" || target.starts_with("wharf::");
    at <= level && (own || level >= LevelFilter::DEBUG)
}

impl<S: Subscriber> Layer<S> for Gate {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // "sometimes", never "always": with "always", tracing would skip `enabled` for
        // the call site from then on, and a forked copy could not be silenced.
        if self.shows(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        allowed() && self.shows(meta)
    }

    fn event_enabled(&self, _: &Event<'_>, _: Context<'_, S>) -> bool {
        allowed()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_is_one_level_name() {
        assert_eq!(parse_level("debug"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level(" WARN\n"), Some(LevelFilter::WARN));
        assert_eq!(parse_level("trace"), Some(LevelFilter::TRACE));
        assert_eq!(parse_level("wharf=debug"), None);
        assert_eq!(parse_level("info,hyper=warn"), None);
        assert_eq!(parse_level(""), None);
    }

    /// The copy of a process forked while another thread held the log's lock (as a
    /// thread writing a line holds stderr's) logs without touching the subscriber:
    /// before `forbid_in_this_process`, it waited for that lock for ever.
    #[test]
    fn a_forked_copy_logs_nothing_even_with_the_log_lock_held() {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        use std::sync::{mpsc, Mutex, PoisonError};

        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::unistd::{fork, ForkResult};

        static HELD: Mutex<()> = Mutex::new(());
        /// Writes nowhere, under `HELD`.
        struct Locked;
        impl Write for Locked {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let _held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let subscriber = tracing_subscriber::fmt().with_writer(|| Locked).finish();
        tracing::subscriber::with_default(subscriber, || {
            let (held, until_held) = mpsc::channel();
            let (release, until_released) = mpsc::channel::<()>();
            let holder = std::thread::spawn(move || {
                let _held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = held.send(());
                let _ = until_released.recv();
            });
            until_held.recv().expect("the lock is held");
            let (read, write) = nix::unistd::pipe().expect("pipe");
            // SAFETY: the copy logs, answers on the pipe and leaves with `_exit`.
            let copy = match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    forbid_in_this_process();
                    tracing::error!("from the copy");
                    let _ = std::fs::File::from(write).write_all(b"done");
                    // SAFETY: ends the copy without running the test's exit handlers.
                    unsafe { nix::libc::_exit(0) }
                }
                ForkResult::Parent { child } => child,
            };
            drop(write);
            let ready = {
                let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(10_000u16)).unwrap_or(0) > 0
            };
            let mut answer = Vec::new();
            if ready {
                let _ = std::fs::File::from(read).read_to_end(&mut answer);
            }
            let _ = nix::sys::signal::kill(copy, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(copy, None);
            let _ = release.send(());
            holder.join().expect("the holder ends");
            assert_eq!(answer, b"done", "the copy hung in a log call");
        });
    }

    #[test]
    fn libraries_show_only_at_debug_and_trace() {
        let agent = "wharf::reconcile::agent";
        let youki = "libcontainer::process::container_init_process";
        assert!(shows(LevelFilter::INFO, agent, Level::INFO));
        assert!(shows(LevelFilter::INFO, "wharf", Level::WARN));
        assert!(!shows(LevelFilter::INFO, agent, Level::DEBUG));
        assert!(!shows(LevelFilter::WARN, "wharf::watch", Level::INFO));
        assert!(!shows(LevelFilter::INFO, "wharfish", Level::INFO));
        assert!(!shows(LevelFilter::INFO, youki, Level::INFO));
        assert!(!shows(LevelFilter::INFO, youki, Level::ERROR));
        assert!(shows(LevelFilter::DEBUG, youki, Level::WARN));
        assert!(shows(LevelFilter::DEBUG, youki, Level::DEBUG));
        assert!(!shows(LevelFilter::DEBUG, "libcgroups::v2", Level::TRACE));
        assert!(shows(LevelFilter::TRACE, "libcgroups::v2", Level::TRACE));
    }
}
