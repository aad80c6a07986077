//! `vigilctl inject` and `vigilctl uninject`: read a manifest from a file
//! or standard input, print it changed on standard output, and what was
//! done to each object on standard error.

use std::io::{Read, Write};

use anyhow::Context;

use super::config::SidecarArgs;
use super::manifest::{InjectOptions, inject_manifest, uninject_manifest};

/// Flags of `vigilctl inject`.
#[derive(Clone, Debug, clap::Args)]
pub struct InjectArgs {
    /// The manifest (YAML, several documents allowed), or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,
    /// Render for a namespace where Istio injects its sidecar too (Vigil's
    /// init then lets Envoy's uid out, and Istio leaves Vigil's ports alone).
    #[arg(long)]
    pub istio: bool,
    /// How the sidecar is rendered (the webhook's flags).
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Flags of `vigilctl uninject`.
#[derive(Clone, Debug, clap::Args)]
pub struct UninjectArgs {
    /// The manifest (YAML, several documents allowed), or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,
}

fn read(file: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the manifest from standard input")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the manifest {file}"))?;
    }
    Ok(text)
}

fn emit(outcome: &super::manifest::Outcome) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(outcome.yaml.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    let mut stderr = std::io::stderr().lock();
    for line in &outcome.report {
        let _ = writeln!(stderr, "{line}");
    }
    Ok(())
}

/// Runs `vigilctl inject`.
pub fn inject(args: &InjectArgs) -> anyhow::Result<()> {
    args.sidecar.validate()?;
    let text = read(&args.file)?;
    let options = InjectOptions {
        sidecar: args.sidecar.clone(),
        istio: args.istio,
    };
    emit(&inject_manifest(&args.file, &text, &options)?)
}

/// Runs `vigilctl uninject`.
pub fn uninject(args: &UninjectArgs) -> anyhow::Result<()> {
    let text = read(&args.file)?;
    emit(&uninject_manifest(&args.file, &text)?)
}
