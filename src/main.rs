//! The `tandem` command line: parse, dispatch, and turn every error into one
//! clear message (the only place errors are mapped for people).

use clap::Parser;

fn main() {
    let cli = tandem_cli::Cli::parse();
    tandem_cli::init_logging();
    if let Err(e) = tandem_cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[path = "cli/mod.rs"]
mod tandem_cli;
