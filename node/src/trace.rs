//! An opt-in event trace for diagnosing the exchange on real links.
//!
//! With `FJORD_TRACE_DIR` set, the node writes one line per control message, chunk header,
//! chunk and abort it sends or receives, and per chunk the data stream starts and finishes
//! writing, to `<dir>/<peer id>.trace`. Each line is
//! `<wall-clock µs> <event> <peer> <details>`, with peers shortened to the last 8 characters of
//! their id, so the files of all nodes of a run can be merged and sorted by time (the
//! emulator's nodes share one clock). It is meant for emulator runs: a busy node writes a few
//! MB per minute and nothing bounds the file, which is why it is off unless asked for.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

use fjord_core::proto::Control;
use fjord_core::wire::ChunkId;
use libp2p::PeerId;

/// The environment variable naming the trace folder.
pub const ENV: &str = "FJORD_TRACE_DIR";

/// A trace file shared by the driver and its link tasks.
#[derive(Debug)]
pub struct Trace {
    out: Mutex<BufWriter<File>>,
}

impl Trace {
    /// Opens `<$FJORD_TRACE_DIR>/<local>.trace` if the variable is set. A file that cannot be
    /// created is reported once and tracing stays off: a diagnostic must not stop a node.
    pub fn from_env(local: &PeerId) -> Option<Arc<Self>> {
        let dir = std::env::var_os(ENV)?;
        let path = Path::new(&dir).join(format!("{local}.trace"));
        match File::create(&path) {
            Ok(f) => {
                let t = Self {
                    out: Mutex::new(BufWriter::with_capacity(64 * 1024, f)),
                };
                t.line("me", local, "");
                Some(Arc::new(t))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot create the trace file");
                None
            }
        }
    }

    /// Writes one event line, stamped now.
    pub fn line(&self, event: &str, peer: &PeerId, details: &str) {
        let at_us = crate::driver::now().as_micros();
        let p = peer.to_string();
        let short = &p[p.len().saturating_sub(8)..];
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // Write errors (a full disk) lose trace lines, nothing else.
        let _ = writeln!(out, "{at_us} {event} {short} {details}");
    }

    /// Writes the buffered lines out (called every second, so a killed node loses little).
    pub fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// Writes an event line if tracing is on; `details` is only formatted then.
pub fn emit(
    trace: &Option<Arc<Trace>>,
    event: &str,
    peer: &PeerId,
    details: impl FnOnce() -> String,
) {
    if let Some(t) = trace {
        t.line(event, peer, &details());
    }
}

/// A chunk id as trace lines show it: `track.sequence`.
pub fn chunk(id: &ChunkId) -> String {
    format!("{}.{}", id.track, id.sequence)
}

/// A control message as trace lines show it: the kind and its chunk, where it has one.
pub fn control(msg: &Control) -> String {
    let mut s = String::new();
    let _ = match msg {
        Control::Have(id) => write!(s, "have {}", chunk(id)),
        Control::Request(id) => write!(s, "request {}", chunk(id)),
        Control::Urgent(id) => write!(s, "urgent {}", chunk(id)),
        Control::Cancel(id) => write!(s, "cancel {}", chunk(id)),
        Control::Ack(id) => write!(s, "ack {}", chunk(id)),
        Control::HaveMap {
            track, base, bits, ..
        } => write!(s, "havemap {track}.{base} {bits:x}"),
        other => write!(s, "{other:?}"),
    };
    s
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.flush();
    }
}
