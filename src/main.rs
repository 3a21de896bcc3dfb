use clap::Parser;
use std::process::ExitCode;
use toolbox::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics on stderr when asked for: TOOLBOX_LOG=error|warn|info|debug|trace.
    if let Some(level) = std::env::var("TOOLBOX_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
    {
        tracing_subscriber::fmt()
            .with_max_level(level)
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
