//! The `edgeauth` binary: parse the command line, run the command, turn an error into one
//! line on stderr and an exit code (see `edgeauth::error`).

use clap::Parser;

fn main() {
    let cli = edgeauth::cli::Cli::parse();
    edgeauth::store::guard::install_panic_hook();
    if let Err(e) = edgeauth::cli::run(cli) {
        eprintln!("edgeauth: {e}");
        std::process::exit(e.exit_code());
    }
}
