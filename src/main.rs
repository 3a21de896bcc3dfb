use clap::Parser;
use std::process::ExitCode;
use toolbox::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics on stderr when asked for: TOOLBOX_LOG=debug (tracing's filter syntax).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TOOLBOX_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toolbox: {e}");
            ExitCode::FAILURE
        }
    }
}
