use std::io::IsTerminal;

use super::ColorChoice;
pub use crate::style::{human_bytes, Palette};

/// The palette for a stream: colours on a terminal, without NO_COLOR, unless
/// `--color` says otherwise.
pub fn palette(choice: ColorChoice, stream_is_terminal: bool) -> Palette {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    Palette::new(match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stream_is_terminal && !no_color,
    })
}

pub fn for_stderr(choice: ColorChoice) -> Palette {
    palette(choice, std::io::stderr().is_terminal())
}

pub fn for_stdout(choice: ColorChoice) -> Palette {
    palette(choice, std::io::stdout().is_terminal())
}

/// Prints an error and the chain of its causes to stderr.
pub fn print_error(error: &dyn std::error::Error, palette: &Palette) {
    eprintln!("{} {error}", palette.red("error:"));
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// The exit code for a command's outcome, printing the error if there is one.
pub fn exit_code(result: Result<(), String>) -> u8 {
    match result {
        Ok(()) => super::exit::OK,
        Err(message) => {
            eprintln!("error: {message}");
            super::exit::FAILURE
        }
    }
}

/// Writes a line to stdout; false when it cannot, e.g. because the reader stopped
/// early (`wharf logs web | head`): the command should then end quietly.
pub fn print_line(line: std::fmt::Arguments) -> bool {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}
