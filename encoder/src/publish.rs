//! Where signed output goes. The encoder hands every manifest and chunk to a [`Publisher`]:
//! [`Origin`] publishes them into the mesh from a node embedded in the encoder, [`Recorder`]
//! writes them to a folder, [`Tee`] does both.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use fjord_core::wire::{Chunk, Manifest};

/// A failure to publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The embedded origin node has stopped.
    #[error("the origin node has stopped")]
    OriginStopped,
    /// Writing to the record folder failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Receives the encoder's signed output, in order: a manifest before the chunks it describes.
pub trait Publisher {
    /// A new or updated manifest.
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), PublishError>;
    /// A signed chunk.
    fn chunk(&mut self, chunk: &Chunk) -> Result<(), PublishError>;
}

/// Writes signed output to a folder: `<epoch>/manifest.fjm` and
/// `<epoch>/t<track>/<sequence>.fjc` (sequence zero-padded to 10 digits, so names sort).
/// Each file appears whole (written beside, then renamed), so a reader never sees half a
/// chunk. The files are the signed wire bytes: `fjord-node inspect` verifies them.
#[derive(Debug)]
pub struct Recorder {
    root: PathBuf,
}

impl Recorder {
    /// Records into `root`, creating it if needed.
    pub fn new(root: &Path) -> Result<Self, PublishError> {
        fs::create_dir_all(root).map_err(|source| PublishError::Io {
            path: root.to_owned(),
            source,
        })?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The path of a chunk's file.
    pub fn chunk_path(root: &Path, epoch: u64, track: u8, sequence: u64) -> PathBuf {
        root.join(epoch.to_string())
            .join(format!("t{track}"))
            .join(format!("{sequence:010}.fjc"))
    }

    /// The path of an epoch's manifest.
    pub fn manifest_path(root: &Path, epoch: u64) -> PathBuf {
        root.join(epoch.to_string()).join("manifest.fjm")
    }

    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
        let io = |source| PublishError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("part");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        drop(file);
        fs::rename(&tmp, path).map_err(io)
    }
}

impl Publisher for Recorder {
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), PublishError> {
        let path = Self::manifest_path(&self.root, manifest.content().epoch);
        Self::write_atomic(&path, manifest.encoded())
    }

    fn chunk(&mut self, chunk: &Chunk) -> Result<(), PublishError> {
        let id = chunk.id();
        let path = Self::chunk_path(&self.root, id.epoch, id.track, id.sequence);
        Self::write_atomic(&path, chunk.encoded())
    }
}

/// Keeps everything in memory: for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Collector {
    /// Manifests received, in order.
    pub manifests: Vec<Manifest>,
    /// Chunks received, in order.
    pub chunks: Vec<Chunk>,
}

impl Publisher for Collector {
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), PublishError> {
        self.manifests.push(manifest.clone());
        Ok(())
    }

    fn chunk(&mut self, chunk: &Chunk) -> Result<(), PublishError> {
        self.chunks.push(chunk.clone());
        Ok(())
    }
}

impl<P: Publisher> Publisher for std::sync::Arc<std::sync::Mutex<P>> {
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), PublishError> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .manifest(manifest)
    }

    fn chunk(&mut self, chunk: &Chunk) -> Result<(), PublishError> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .chunk(chunk)
    }
}

/// The origin: a Fjord node embedded in the encoder, which listens for peers and pushes every
/// chunk into the mesh. It runs on its own tokio runtime; the encoder's thread hands it chunks
/// over a bounded queue (and waits when the node falls behind, rather than queue without end).
pub struct Origin {
    node: fjord_node::NodeHandle,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin").field("node", &self.node).finish()
    }
}

impl Origin {
    /// Starts the origin node (and its HTTP endpoints on `http`, if given).
    pub fn start(
        config: fjord_node::NodeConfig,
        http: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<(Self, Option<std::net::SocketAddr>)> {
        use anyhow::Context;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("origin")
            .enable_all()
            .build()
            .context("cannot start the origin's runtime")?;
        let (node, http) = runtime.block_on(async {
            let node = fjord_node::start(config)
                .await
                .context("cannot start the origin node")?;
            let http = match http {
                Some(addr) => Some(
                    fjord_node::http::serve(node.clone(), addr, Default::default())
                        .await
                        .with_context(|| format!("cannot serve HTTP on {addr}"))?,
                ),
                None => None,
            };
            Ok::<_, anyhow::Error>((node, http))
        })?;
        Ok((Self { node, runtime }, http))
    }

    /// The node, for its addresses and status.
    pub fn node(&self) -> &fjord_node::NodeHandle {
        &self.node
    }

    /// Writes the origin's JSON status to `path` every second.
    pub fn write_status_file(&self, path: PathBuf) {
        let _guard = self.runtime.enter();
        fjord_node::driver::write_status_file(self.node.clone(), path, 0);
    }

    /// What the pipeline publishes through.
    pub fn publisher(&self) -> OriginPublisher {
        OriginPublisher(self.node.clone())
    }

    /// Says goodbye to the neighbours and stops.
    pub fn shutdown(self) {
        self.runtime.block_on(self.node.shutdown());
    }
}

/// Publishes into the origin node from the encoder's thread.
#[derive(Debug, Clone)]
pub struct OriginPublisher(fjord_node::NodeHandle);

impl Publisher for OriginPublisher {
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), PublishError> {
        self.0
            .blocking_publish_manifest(manifest.clone())
            .map_err(|_| PublishError::OriginStopped)
    }

    fn chunk(&mut self, chunk: &Chunk) -> Result<(), PublishError> {
        self.0
            .blocking_publish_chunk(chunk.clone())
            .map_err(|_| PublishError::OriginStopped)
    }
}

/// Hands everything to two publishers in turn.
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: Publisher, B: Publisher> Publisher for Tee<A, B> {
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), PublishError> {
        self.0.manifest(manifest)?;
        self.1.manifest(manifest)
    }

    fn chunk(&mut self, chunk: &Chunk) -> Result<(), PublishError> {
        self.0.chunk(chunk)?;
        self.1.chunk(chunk)
    }
}

impl<P: Publisher + ?Sized> Publisher for Box<P> {
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), PublishError> {
        (**self).manifest(manifest)
    }

    fn chunk(&mut self, chunk: &Chunk) -> Result<(), PublishError> {
        (**self).chunk(chunk)
    }
}
