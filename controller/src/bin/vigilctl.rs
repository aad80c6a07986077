//! `vigilctl`: the command line of Vigil.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = vigil_controller::cli::Cli::parse();
    match vigil_controller::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => vigil_controller::cli::report_error(&e),
    }
}
