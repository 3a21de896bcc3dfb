//! `toolbox`: the agent and its one-shot commands, a thin shell over the library's CLI.

#![forbid(unsafe_code)]
use clap::Parser;
use std::process::ExitCode;
use toolbox::cli::{run, Cli};

fn main() -> ExitCode {
    // Arguments that are not UTF-8 are clap's to report.
    let args: Option<Vec<String>> = std::env::args_os().map(|a| a.into_string().ok()).collect();
    let simple = args.and_then(|a| Cli::parse_simple(&a));
    let cli = simple.unwrap_or_else(Cli::parse);
    // Diagnostics of one-shot commands on stderr when asked for: TOOLBOX_LOG=debug etc. The
    // agent sets up its own logging from its config.
    if cli.command.is_some() && !matches!(cli.command, Some(toolbox::cli::Command::Run)) {
        if let Some(level) = std::env::var("TOOLBOX_LOG")
            .ok()
            .and_then(|v| v.parse::<tracing::Level>().ok())
        {
            tracing_subscriber::fmt()
                .with_max_level(level)
                .with_writer(std::io::stderr)
                .init();
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The VMX's own words, alone, as vmware-rpctool prints them: scripts match on them.
        Err(e @ toolbox::cli::CliError::VmxRefused(_)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("toolbox: {e}");
            ExitCode::FAILURE
        }
    }
}
