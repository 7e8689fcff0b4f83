//! The `labelflow` binary: parse the command line, start logging, hand each command to
//! its module under `cli/`, map the outcome to an exit code (0 ok, 1 finished with
//! per-image errors, 2 fatal, 3 interrupted with progress published).

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ModelCommand};

fn main() -> ExitCode {
    return_large_buffers_to_the_os();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", error_message(&e));
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let show_progress = !cli.no_progress;
    match cli.command {
        Command::Run(args) => cli::run::run(args, cli.ort_lib, show_progress).await,
        Command::Validate(args) => cli::run::validate(args, cli.ort_lib),
        Command::Query(args) => cli::query::run(args).await,
        Command::Report(args) => cli::report::run(args).await,
        Command::Model(ModelCommand::Init(args)) => cli::model::init(&args),
        Command::Model(ModelCommand::Import(args)) => cli::model::import(&args),
        Command::Model(ModelCommand::Inspect { path }) => {
            cli::model::inspect(&path, cli.ort_lib.as_deref())
        }
        Command::Doctor => cli::doctor::run(cli.ort_lib.as_deref()),
        Command::Bench(args) => cli::run::bench(args, cli.ort_lib).await,
        Command::Train(args) => cli::train::run(args, show_progress).await,
    }
}

/// The error and its causes in one line (`labelflow::error::report_with`: each cause
/// said once, the settings a hint names as flags), secrets masked.
fn error_message(e: &anyhow::Error) -> String {
    let error: &(dyn std::error::Error + 'static) = e.as_ref();
    labelflow::redact::redact(&labelflow::error::report_with(error, &cli::flag)).into_owned()
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "labelflow=warn,ort=off",
        1 => "labelflow=info,ort=warn",
        _ => "labelflow=debug,ort=info",
    };
    let filter =
        EnvFilter::try_from_env("LABELFLOW_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| labelflow::redact::RedactingWriter(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// glibc raises its mmap threshold each time a large block is freed, after which
/// fetched files and decoded images (megabytes each, freed by other threads) come from
/// per-thread heaps that rarely shrink: a run over camera photos then grows by hundreds
/// of MiB. A fixed 1 MiB threshold keeps every such buffer in its own mapping, returned
/// to the system when freed (`labelflow bench` on 24 MP JPEGs: peak RSS 862 → 674 MiB).
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
