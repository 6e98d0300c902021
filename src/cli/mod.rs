//! The command line: global options and one module per subcommand.

mod agent;
mod apply;
mod control;
mod down;
mod events;
mod exec;
mod export;
mod image;
mod images;
mod logs;
mod output;
mod plan;
mod progress;
mod ps;
mod pull;
mod reconcile;
mod run;
mod schema;
mod secret;
mod stats;
mod status;
mod sync;
mod target;
mod validate;

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::level_filters::LevelFilter;

use crate::image::INSECURE_REGISTRIES_ENV;
use crate::reconcile::Host;
use crate::style::Palette;

/// Exit codes shared by all commands (documented in the README). A wrong command
/// line exits with 2, from clap.
pub mod exit {
    /// Success: everything valid / nothing to do.
    pub const OK: u8 = 0;
    /// The input is invalid or the operation failed.
    pub const FAILURE: u8 = 1;
    /// With `--detailed-exitcode`: there are (plan) or were (apply) changes.
    pub const CHANGES: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about = "Declarative container reconciler for one Linux host",
    after_help = "Examples:\n  wharf validate examples/\n  wharf pull busybox:1.36\n  wharf images"
)]
pub struct Cli {
    /// State directory: images, containers, volumes and the state database.
    #[arg(
        long,
        global = true,
        env = "WHARF_ROOT",
        default_value = "/var/lib/wharf"
    )]
    pub root: PathBuf,

    /// Print more detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// When to use colours (NO_COLOR in the environment turns `auto` off).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// A registry (HOST:PORT) to reach over plain HTTP; repeatable. Loopback
    /// registries always are.
    #[arg(long = "insecure-registry", global = true, env = INSECURE_REGISTRIES_ENV, value_delimiter = ',')]
    pub insecure_registries: Vec<String>,

    /// The least severe log events shown on stderr [default: info, or RUST_LOG when it
    /// is one of these names]. Libraries' events (libcontainer's...) show at debug and
    /// trace only.
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<LogLevel>,

    /// How log events are written on stderr: lines for people, or one JSON object per
    /// event for log shippers.
    #[arg(long, global = true, value_enum, env = "WHARF_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The IPv4 subnet of wharf's bridge wharf0, /8 to /24 [default: 10.77.0.0/16, or
    /// the one the bridge has]: containers get addresses in its lower half, services
    /// in its upper half. To change it, remove the containers on the bridge and the
    /// bridge (ip link del wharf0).
    #[arg(long, global = true, env = "WHARF_SUBNET")]
    pub subnet: Option<crate::network::Subnet>,

    /// How many containers are stopped and removed at once [default: 64 per CPU, 32
    /// to 256, within the open-file limit]; at most one per CPU is built at once.
    #[arg(long, global = true, env = "WHARF_PARALLEL", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Validate(validate::Args),
    Plan(plan::Args),
    Apply(apply::Args),
    Agent(agent::Args),
    Events(events::Args),
    Status(status::Args),
    Down(down::Args),
    Schema(schema::Args),
    Pull(pull::Args),
    Images(images::Args),
    Image(image::Args),
    Run(run::Args),
    Ps(ps::Args),
    Stop(control::StopArgs),
    Rm(control::RmArgs),
    Kill(control::KillArgs),
    Logs(logs::Args),
    Exec(exec::Args),
    Stats(stats::Args),
    Export(export::Args),
    Sync(sync::Args),
    Secret(secret::Args),
    /// Internal: prints the Docker-config login for a registry as JSON (run by wharf
    /// processes that run containers, which cannot wait for credential helpers).
    #[command(hide = true)]
    CredentialLookup {
        registry: String,
    },
}

/// Parses the command line and runs the command; returns the process exit code.
pub fn main() -> ExitCode {
    crate::hostroot::set_private_umask();
    let cli = Cli::parse();
    start_logging(&cli);
    if let Some(subnet) = cli.subnet {
        crate::network::Subnet::configure(subnet);
    }
    let code = match &cli.command {
        Command::Validate(args) => validate::run(&cli, args),
        Command::Plan(args) => with_session(&cli, |s| plan::run(s, args)),
        Command::Apply(args) => with_session(&cli, |s| apply::run(s, args)),
        Command::Agent(args) => with_session(&cli, |s| agent::run(s, args)),
        Command::Events(args) => with_session(&cli, |s| events::run(s, args)),
        Command::Status(args) => with_session(&cli, |s| status::run(s, args)),
        Command::Down(args) => with_session(&cli, |s| down::run(s, args)),
        Command::Schema(args) => schema::run(args),
        Command::Export(args) => export::run(&cli, args),
        Command::Sync(args) => with_session(&cli, |s| sync::run(s, args)),
        Command::Secret(args) => with_session(&cli, |s| secret::run(s, args)),
        Command::Pull(args) => with_session(&cli, |s| pull::run(s, args)),
        Command::Images(args) => with_session(&cli, |s| images::run(s, args)),
        Command::Image(args) => with_session(&cli, |s| image::run(s, args)),
        Command::Run(args) => with_session(&cli, |s| run::run(s, args)),
        Command::Ps(args) => with_session(&cli, |s| ps::run(s, args)),
        Command::Stop(args) => with_session(&cli, |s| control::stop(s, args)),
        Command::Rm(args) => with_session(&cli, |s| control::rm(s, args)),
        Command::Kill(args) => with_session(&cli, |s| control::kill(s, args)),
        Command::Logs(args) => with_session(&cli, |s| logs::run(s, args)),
        Command::Exec(args) => with_session(&cli, |s| exec::run(s, args)),
        Command::Stats(args) => with_session(&cli, |s| stats::run(s, args)),
        Command::CredentialLookup { registry } => {
            let login = crate::image::docker_login(registry);
            println!("{}", serde_json::to_string(&login).unwrap_or_default());
            exit::OK
        }
    };
    ExitCode::from(code)
}

/// Installs the process's log on stderr: at `--log-level`, else at the level RUST_LOG
/// names, else info; as `--log-format` says; coloured as `--color` says for stderr.
fn start_logging(cli: &Cli) {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let from_env = rust_log.as_deref().map(crate::logging::parse_level);
    let level = match (cli.log_level, from_env) {
        (Some(level), _) => level.filter(),
        (None, Some(Some(level))) => level,
        (None, _) => LevelFilter::INFO,
    };
    let format = match cli.log_format {
        LogFormat::Text => crate::logging::Format::Text,
        LogFormat::Json => crate::logging::Format::Json,
    };
    let ansi = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
        }
    };
    if let Err(err) = crate::logging::install(level, format, ansi) {
        eprintln!("wharf: cannot set up the log: {err}");
    }
    if let (None, Some(value), Some(None)) = (cli.log_level, &rust_log, from_env) {
        tracing::warn!(
            "RUST_LOG={value:?} is not one of error, warn, info, debug, trace: logging at info"
        );
    }
}

/// Runs a command that needs the host's stores, or prints why they cannot be opened.
fn with_session(cli: &Cli, command: impl FnOnce(&Session) -> u8) -> u8 {
    match Session::open(cli) {
        Ok(session) => command(&session),
        Err(code) => code,
    }
}

/// What commands that touch the host share: the stores under `--root`, registry
/// clients and an async runtime.
pub struct Session {
    host: Host,
    pub color: ColorChoice,
    executor: tokio::runtime::Runtime,
    errors: Palette,
}

/// A session is the host's stores plus what the CLI needs to drive them.
impl std::ops::Deref for Session {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.host
    }
}

/// Raises this process's soft limit of open files to its hard limit (as Go programs
/// do): stopping many containers at once holds a file descriptor for each.
/// Containers get their own limit from their config (1024 soft).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

impl Session {
    /// Opens the stores, or prints why not and returns the exit code.
    pub fn open(cli: &Cli) -> Result<Self, u8> {
        let errors = output::for_stderr(cli.color);
        let fail = |err: &dyn std::error::Error| output::fail(err, &errors);
        let wharf = std::env::current_exe().map_err(|err| fail(&err))?;
        raise_open_file_limit();
        let (host, tightened) = Host::open(
            &cli.root,
            cli.insecure_registries.clone(),
            &wharf,
            cli.parallel.map(usize::from),
        )
        .map_err(|err| fail(&err))?;
        if let Some(tightened) = tightened {
            eprintln!("wharf: {tightened}");
        }
        let executor = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|err| fail(&err))?;
        Ok(Session {
            host,
            color: cli.color,
            executor,
            errors,
        })
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.executor.block_on(future)
    }

    /// wharf's containers, or the exit code after printing why they cannot be listed.
    pub fn containers(&self) -> Result<Vec<crate::runtime::ObservedContainer>, u8> {
        use crate::runtime::Runtime;
        self.block_on(self.runtime.list())
            .map_err(|err| self.fail(&err))
    }

    /// Prints `value` as pretty JSON on stdout; returns the exit code.
    pub fn print_json(&self, value: &impl serde::Serialize) -> u8 {
        match serde_json::to_string_pretty(value) {
            Ok(json) => {
                println!("{json}");
                exit::OK
            }
            Err(err) => self.fail(&err),
        }
    }

    /// Prints the error with its causes; returns the failure exit code.
    pub fn fail(&self, error: &dyn std::error::Error) -> u8 {
        output::fail(error, &self.errors)
    }

    /// Prints an error that is only a message; returns the failure exit code.
    pub fn fail_with(&self, message: impl std::fmt::Display) -> u8 {
        output::fail_with(message, &self.errors)
    }

    /// The exit code for a command's outcome, printing the error if there is one.
    pub fn exit_code(&self, result: Result<(), output::Failure>) -> u8 {
        match result {
            Ok(()) => exit::OK,
            Err(err) => self.fail(&*err),
        }
    }
}
