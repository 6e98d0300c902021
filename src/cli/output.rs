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

/// What a command failed with when it has no more precise type: any error (`?`
/// converts), or a message (`String` and `&str` convert too).
pub type Failure = Box<dyn std::error::Error>;

/// The one way the CLI reports an error: `error: <error>` on stderr, then each cause
/// in its chain as `  caused by: <cause>`. Returns the failure exit code.
pub fn fail(error: &dyn std::error::Error, palette: &Palette) -> u8 {
    eprintln!("{} {error}", palette.red("error:"));
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    super::exit::FAILURE
}

/// [`fail`] for an error that is only a message (a usage problem, a refusal).
pub fn fail_with(message: impl std::fmt::Display, palette: &Palette) -> u8 {
    fail(&*Failure::from(message.to_string()), palette)
}

/// Writes a line to stdout; false when it cannot, e.g. because the reader stopped
/// early (`wharf logs web | head`): the command should then end quietly.
pub fn print_line(line: std::fmt::Arguments) -> bool {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}
