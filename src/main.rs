use clap::Parser;
use std::process::ExitCode;
use toolbox::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toolbox: {e}");
            ExitCode::FAILURE
        }
    }
}
