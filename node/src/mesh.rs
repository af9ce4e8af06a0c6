//! The libp2p side of a node: transport, behaviours and the swarm.
//!
//! QUIC carries everything. Around Fjord's own streams ([`libp2p_stream`], opened once per
//! neighbour and direction, see [`crate::framing`]) the swarm runs:
//! - identify, so peers learn each other's listen addresses and feed them to Kademlia;
//! - Kademlia on a private protocol name (Fjord's own DHT, not the IPFS one): every node
//!   provides the channel id as a key, and a node that wants neighbours asks for its providers;
//! - mDNS, to find nodes on the same LAN without a bootstrap address;
//! - ping, whose round-trip times go to the scheduler;
//! - AutoNAT, the relay client and DCUtR, so viewers behind NAT can be reached (through a
//!   relay, then directly after hole punching); seeds and the origin also run a relay server;
//! - connection limits and a block list (peers that sent invalid data are kept out for a while).

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder, allow_block_list, autonat, connection_limits,
    dcutr, identify, kad, mdns, noise, ping, relay, yamux,
};

/// Kademlia protocol name: Fjord's own DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/fjord/kad/1.0.0");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/fjord/1";

/// Stream protocol names of a channel: peers of other channels do not speak them, so a stray
/// connection (from mDNS, say) never mixes channels.
#[derive(Clone, Debug)]
pub struct Protocols {
    /// Control messages and manifests.
    pub control: StreamProtocol,
    /// Chunks.
    pub data: StreamProtocol,
    /// Audience reports to the origin and seeds (see [`crate::report`]).
    pub report: StreamProtocol,
}

impl Protocols {
    /// The protocol names for the channel whose id is `channel` (its text form).
    pub fn for_channel(channel: &str) -> Self {
        let control = StreamProtocol::try_from_owned(format!("/fjord/2/{channel}/ctl"))
            .expect("starts with a slash");
        let data = StreamProtocol::try_from_owned(format!("/fjord/2/{channel}/data"))
            .expect("starts with a slash");
        let report = StreamProtocol::try_from_owned(format!("/fjord/1/{channel}/report"))
            .expect("starts with a slash");
        Self {
            control,
            data,
            report,
        }
    }
}

pub use behaviour::{Behaviour, BehaviourEvent};

/// The behaviour struct lives in its own module: the derive generates an event enum that
/// cannot carry documentation.
mod behaviour {
    #![allow(missing_docs)]
    use super::*;

    /// Every behaviour of a Fjord node.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Refuse everything beyond the limits before any behaviour sees it.
        pub limits: connection_limits::Behaviour,
        /// Peers kept out after misbehaving.
        pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
        /// Fjord's control and data streams.
        pub streams: libp2p_stream::Behaviour,
        /// Listen addresses and protocols of peers.
        pub identify: identify::Behaviour,
        /// Provider records of the channel.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// RTT samples.
        pub ping: ping::Behaviour,
        /// LAN discovery.
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// Whether we are reachable from outside.
        pub autonat: autonat::Behaviour,
        /// Reservations and circuits through a relay, for nodes behind NAT.
        pub relay_client: relay::client::Behaviour,
        /// Relay service for others (seeds and the origin).
        pub relay_server: Toggle<relay::Behaviour>,
        /// Hole punching over a relayed connection.
        pub dcutr: dcutr::Behaviour,
    }
}

/// How to build the swarm.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Look for peers on the LAN.
    pub mdns: bool,
    /// Offer a relay to nodes behind NAT.
    pub relay_server: bool,
    /// Connections at most (in and out).
    pub max_connections: u32,
    /// A connection with nothing on it is closed after this long (a crashed peer is noticed
    /// no later than this: QUIC keep-alives go every quarter of it).
    pub idle_timeout: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            relay_server: false,
            max_connections: 256,
            // A crashed neighbour's requests and pending transfers are lost until it is
            // noticed; 2 s is a few RTTs even on a congested home uplink.
            idle_timeout: Duration::from_secs(2),
        }
    }
}

/// Errors building the swarm.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The Noise upgrade for relayed connections could not be set up.
    #[error("noise: {0}")]
    Noise(#[from] noise::Error),
    /// mDNS could not start.
    #[error("mDNS: {0}")]
    Mdns(std::io::Error),
    /// Any other failure while building.
    #[error("{0}")]
    Other(String),
}

/// Builds the swarm of a node with identity `keypair`.
pub fn build(keypair: Keypair, config: &MeshConfig) -> Result<Swarm<Behaviour>, MeshError> {
    let idle = config.idle_timeout;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic_config(|mut c| {
            // A dead peer is detected by missing keep-alives: quickly, so the scheduler stops
            // counting on it. Keep-alive traffic is a few packets a second at most.
            c.max_idle_timeout = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX);
            c.keep_alive_interval = idle / 4;
            // BBR: random loss (radio, busy home links) must not shrink a connection's rate
            // the way Cubic does, or chunks wait inside QUIC where the scheduler cannot see.
            c.congestion_controller = Some(Arc::new(quinn::congestion::BbrConfig::default()));
            // Acknowledgements every 10th packet or after 200 ms, not every second one: a
            // viewer receives small control packets on 20 connections, and their
            // acknowledgements were the largest part of what a slow uplink sent besides
            // chunks. A gap in the packet numbers (a loss) is still acknowledged at once.
            // (emu30: 100 ms -> 200 ms, with announcements held 40 ms instead of 20, took a
            // slow host's packets from 24,800 to 22,400 per run and its uplink queue wait from
            // 108 to 78 ms; 300 ms and 60 ms gained nothing more.)
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(quinn::VarInt::from_u32(9))
                .max_ack_delay(Some(Duration::from_millis(200)));
            c.ack_frequency = Some(ack);
            c
        })
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(2))
                .with_max_pending_incoming(Some(64));
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(10));
            let kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("fjord-node/{}", env!("CARGO_PKG_VERSION")))
                    .with_cache_size(256),
            );
            let mdns = if config.mdns {
                Some(
                    mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                        .map_err(|e| Box::new(MeshError::Mdns(e)))?,
                )
            } else {
                None
            };
            let relay_server = config
                .relay_server
                .then(|| relay::Behaviour::new(peer_id, relay::Config::default()));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                blocked: allow_block_list::Behaviour::default(),
                streams: libp2p_stream::Behaviour::new(),
                identify,
                kad,
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(5)),
                ),
                mdns: Toggle::from(mdns),
                autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
                relay_client,
                relay_server: Toggle::from(relay_server),
                dcutr: dcutr::Behaviour::new(peer_id),
            })
        })
        .map_err(|e| MeshError::Other(e.to_string()))?
        // Every stream proposes one protocol, so the opener can write at once instead of
        // waiting a round trip for the negotiation: a new neighbour's Hello and manifest go
        // out with the stream's opening.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(idle)
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}

/// The provider key of a channel in the DHT.
pub fn channel_key(channel: &fjord_core::wire::ChannelId) -> kad::RecordKey {
    kad::RecordKey::new(channel.as_bytes())
}

/// The peer id at the end of an address (`.../p2p/<id>`), if any.
pub fn peer_of(addr: &libp2p::Multiaddr) -> Option<PeerId> {
    addr.iter().last().and_then(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
