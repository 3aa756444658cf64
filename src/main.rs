//! The `edgeauth` binary: parse the command line, run the command, turn an error into one
//! line on stderr and an exit code (see `edgeauth::error`).

use clap::Parser;

fn main() {
    let cli = edgeauth::cli::Cli::parse();
    edgeauth::store::guard::install_panic_hook();
    let result = edgeauth::cli::run(cli);
    // Log lines still queued for the writer thread go out before the last word or the exit.
    edgeauth::logsink::flush();
    if let Err(e) = result {
        eprintln!("edgeauth: {e}");
        std::process::exit(e.exit_code());
    }
}
