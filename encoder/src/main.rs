//! `fjord-encoder`: the broadcaster's command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fjord_encoder::keyfile;

/// Fjord encoder: turns a live broadcast into a signed channel.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new channel: write a fresh secret key and print the channel id.
    ///
    /// The file is created readable by its owner only and is never overwritten. Keep a copy:
    /// the channel id is the key's public half, so a lost key means a new channel.
    Keygen {
        /// Where to write the key.
        #[arg(short, long, default_value = "channel.key")]
        out: PathBuf,
    },
    /// Print the channel id of a key file.
    Id {
        /// The key file.
        #[arg(default_value = "channel.key")]
        key: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Keygen { out } => {
            let key = keyfile::generate(&out).context("cannot create the channel key")?;
            eprintln!("wrote {} (keep it private and backed up)", out.display());
            println!("{}", key.channel_id());
        }
        Command::Id { key } => {
            let (key, exposed) = keyfile::load(&key).context("cannot read the channel key")?;
            if exposed {
                eprintln!("warning: the key file is readable by other users; run chmod 600 on it");
            }
            println!("{}", key.channel_id());
        }
    }
    Ok(())
}
