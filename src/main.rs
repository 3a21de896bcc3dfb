//! `toolbox`: the agent and its one-shot commands, a thin shell over the library's CLI. Started
//! as `vmware-rpctool`, `vmware-checkvm` or `vmtoolsd` (symlinks), or as `toolbox NAME ARGS`, it
//! answers as that program does.

#![forbid(unsafe_code)]
use clap::Parser;
use std::process::ExitCode;
use toolbox::cli::{run, Cli, Command};
use toolbox::dropin::{self, DropIn, Outcome};

fn main() -> ExitCode {
    // Arguments that are not UTF-8 are clap's to report.
    let args: Option<Vec<String>> = std::env::args_os().map(|a| a.into_string().ok()).collect();
    let cli = match args.as_deref().and_then(drop_in) {
        Some((which, program, rest)) => match run_drop_in(which, program, rest) {
            Ok(cli) => cli,
            Err(code) => return code,
        },
        None => {
            let simple = args.and_then(|a| Cli::parse_simple(&a));
            simple.unwrap_or_else(Cli::parse)
        }
    };
    // Diagnostics of one-shot commands on stderr when asked for: TOOLBOX_LOG=debug etc. The
    // agent sets up its own logging from its config.
    if cli.command.is_some() && !matches!(cli.command, Some(Command::Run)) {
        init_stderr_logging();
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

/// The drop-in named by `argv[0]`, or by `argv[1]` after a `toolbox` `argv[0]`, and its arguments.
fn drop_in(args: &[String]) -> Option<(DropIn, &str, &[String])> {
    let (program, rest) = args.split_first()?;
    if let Some(which) = DropIn::from_program(program) {
        return Some((which, program.as_str(), rest));
    }
    let (name, rest) = rest.split_first()?;
    dropin::NAMES
        .contains(&name.as_str())
        .then(|| DropIn::from_program(name))
        .flatten()
        .map(|which| (which, name.as_str(), rest))
}

/// Runs a drop-in; plain `vmtoolsd` becomes `toolbox run`.
fn run_drop_in(which: DropIn, program: &str, rest: &[String]) -> Result<Cli, ExitCode> {
    init_stderr_logging();
    let env = dropin::Env {
        program: Some(program.to_owned()),
        ..dropin::Env::from_process()
    };
    let outcome = dropin::run(
        which,
        rest,
        &env,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match outcome {
        Outcome::Exit(code) => Err(ExitCode::from(code)),
        Outcome::RunAgent { config } => {
            let transport = match env.transport.as_deref().map(str::parse).transpose() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("vmtoolsd: TOOLBOX_TRANSPORT: {e}");
                    return Err(ExitCode::FAILURE);
                }
            };
            Ok(Cli {
                transport,
                config,
                standalone: false,
                assume_vmware: env.assume_vmware,
                command: Some(Command::Run),
            })
        }
    }
}

fn init_stderr_logging() {
    if let Some(level) = std::env::var("TOOLBOX_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
    {
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .try_init();
    }
}
