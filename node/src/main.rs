//! `fjord-node`: the Fjord relay node's command line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use fjord_node::core::wire::ChannelId;
use fjord_node::inspect;

/// Fjord relay node: relays a signed live channel to and from peers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode stored manifests or chunks, print what they say and check their signatures.
    Inspect {
        /// Files holding one encoded manifest or chunk each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The channel the files must belong to. Without it, each file is checked against the
        /// channel it names.
        #[arg(long)]
        channel: Option<ChannelId>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { files, channel } => {
            let mut failures = 0;
            for file in &files {
                let bytes = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                match inspect::describe(Bytes::from(bytes), channel.as_ref()) {
                    Ok(text) => print!("{}:\n{text}", file.display()),
                    Err(e) => {
                        failures += 1;
                        eprintln!("{}: {e}", file.display());
                    }
                }
            }
            if failures > 0 {
                bail!("{failures} of {} files failed the check", files.len());
            }
            Ok(())
        }
    }
}
