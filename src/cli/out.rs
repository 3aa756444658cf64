//! Standard output for the CLI. `println!` panics when the reader has gone away
//! (`edgeauth user list | head`); a command's output ends quietly then, with exit code 0, as
//! ripgrep and coreutils do. Every line the CLI prints goes through [`line`] (the `outln!`
//! macro); clippy's `print_stdout` keeps it that way.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// Writes one line to stdout. A closed pipe ends the process quietly (exit 0); any other
/// write error ends it with a one-line reason (exit 1). Neither happens before the command's
/// own work is committed: output follows the change it reports.
pub fn line(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written.and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("edgeauth: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}
