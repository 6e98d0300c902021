//! The command line: global options and one module per subcommand.

mod output;
mod schema;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use output::Palette;

/// Exit codes shared by all commands (documented in the README). A wrong command
/// line exits with 2, from clap.
pub mod exit {
    /// Success: everything valid / nothing to do.
    pub const OK: u8 = 0;
    /// The input is invalid or the operation failed.
    pub const FAILURE: u8 = 1;
}

#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about = "Declarative container reconciler for one Linux host",
    after_help = "Examples:\n  wharf validate examples/\n  wharf schema > service.schema.json"
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

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Validate(validate::Args),
    Schema(schema::Args),
}

/// Parses the command line and runs the command; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Validate(args) => validate::run(&cli, args),
        Command::Schema(args) => schema::run(args),
    };
    ExitCode::from(code)
}
