//! The `vigil-proxy` binary: `vigil-proxy init ...` writes the pod's
//! iptables rules and exits; anything else parses the sidecar's flags,
//! initialises logging and runs the sidecar.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
        return init();
    }
    proxy()
}

/// `vigil-proxy init`: plan and apply (or print) the iptables rules.
fn init() -> ExitCode {
    let args = vigil_proxy::init::InitArgs::parse_from(std::env::args_os().skip(1));
    match vigil_proxy::init::run(&args, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: vigil-proxy init: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The sidecar, on a data-path runtime sized by `--worker-threads`.
fn proxy() -> ExitCode {
    let args = vigil_proxy::Args::parse();
    let filter = match args.log.parse::<Targets>() {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "error: --log {:?} is not a valid tracing filter: {e}",
                args.log
            );
            return ExitCode::FAILURE;
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
        .with(filter)
        .init();
    let workers = vigil_proxy::runtime::worker_threads(args.worker_threads);
    let runtime = match vigil_proxy::runtime::data_runtime(workers) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the data-path runtime ({workers} threads): {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::debug!(workers, "data-path runtime");
    runtime.block_on(async {
        match vigil_proxy::start(args).await {
            Ok(running) => {
                running.wait().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
