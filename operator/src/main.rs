//! Tessera operator.
//!
//! ```text
//! operator crd [--out DIR]   print (or write) the CRD manifests generated from tessera-crds
//! ```
//!
//! The reconcilers (Secrets, verifiers, keys, status) are tracked in the operator issue; this
//! binary today carries the CRD generator that `crds/*.yaml` and the chart are built from.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Tessera operator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CRD manifests, or write one file per CRD into a folder.
    Crd {
        /// Folder to write `<plural>.tessera.dev.yaml` files into; prints to stdout when absent.
        #[arg(long, env = "TESSERA_CRD_OUT")]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let Args { command } = Args::parse();
    match command {
        Command::Crd { out } => write_crds(out),
    }
}

fn write_crds(out: Option<PathBuf>) -> anyhow::Result<()> {
    for (file, crd) in tessera_crds::crd::all() {
        let yaml = tessera_crds::crd::to_yaml(&crd).context("serializing a CRD")?;
        match &out {
            Some(dir) => {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
