//! Neighbour maintenance, once per [`Config::maintenance_interval`]: keep a bounded number of
//! useful neighbours without losing the randomness that keeps the mesh robust.
//!
//! - A neighbour that neither gave us a first copy nor took a chunk for
//!   [`Config::idle_timeout`] is replaced (unless protected).
//! - Above [`Config::max_neighbours`] (incoming connections are accepted with some slack), the
//!   lowest-scored unprotected neighbours are dropped. A viewer scores a neighbour by what it
//!   recently gave and took, plus its onward value and a small bonus for a short RTT; the origin
//!   by onward value alone, so its few copies of each chunk go to the peers that multiply them
//!   fastest.
//! - A share of slots ([`Config::protected_share`]), drawn at random when the link opens, is
//!   never dropped for its score: those links keep the mesh an expander rather than a clique of
//!   the best-connected.
//! - Below [`Config::min_neighbours`] the node asks discovery for candidates; a newcomer
//!   refused by a full peer asks at once, not at the next maintenance.
//!
//! [`Config::maintenance_interval`]: crate::node::Config::maintenance_interval
//! [`Config::idle_timeout`]: crate::node::Config::idle_timeout
//! [`Config::max_neighbours`]: crate::node::Config::max_neighbours
//! [`Config::protected_share`]: crate::node::Config::protected_share
//! [`Config::min_neighbours`]: crate::node::Config::min_neighbours

use crate::node::{Node, Output, Policy};
use crate::proto::{Control, GoodbyeReason, Role};
use crate::time::Time;

impl Node {
    pub(crate) fn maintain(&mut self, now: Time) {
        if self.config.policy == Policy::MeshPull && self.next_repair.is_none() {
            self.next_repair = Some(now);
        }
        let idle = self.config.idle_timeout;
        let min = self.config.min_neighbours;
        let mut doomed: Vec<usize> = Vec::new();
        let mut count = self.neighbours.len();
        for (slot, n) in self.neighbours.iter() {
            if count <= min {
                break;
            }
            let stale =
                now.saturating_since(n.last_useful) > idle && now.saturating_since(n.since) > idle;
            if stale && !n.protected && self.config.role != Role::Origin {
                doomed.push(slot);
                count -= 1;
            }
        }
        if count > self.config.max_neighbours {
            let origin = self.config.role == Role::Origin;
            let mut ranked: Vec<(f64, usize)> = self
                .neighbours
                .iter()
                .filter(|(slot, n)| !n.protected && !doomed.contains(slot))
                .map(|(slot, n)| {
                    let score = if origin {
                        n.onward
                    } else {
                        2.0 * f64::from(n.useful_from)
                            + f64::from(n.useful_to)
                            + n.onward
                            + 0.05 / n.srtt.as_secs_f64().max(0.001)
                    };
                    (score, slot)
                })
                .collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (_, slot) in ranked.into_iter().take(count - self.config.max_neighbours) {
                doomed.push(slot);
            }
        }
        for slot in doomed {
            let Some(peer) = self.neighbours.get(slot).map(|n| n.peer) else {
                continue;
            };
            self.send_control(slot, Control::Goodbye(GoodbyeReason::Replaced));
            self.drop_neighbour(now, slot);
            self.emit(Output::Disconnect(peer));
        }
        for (_, n) in self.neighbours.iter_mut() {
            // Halve rather than reset, so scores reflect the last few seconds, not one tick.
            n.useful_from /= 2;
            n.useful_to /= 2;
        }
        if self.neighbours.len() < min {
            self.want_peers();
        }
        if self.config.policy == Policy::FjordTrees {
            self.choose_parents(now);
            if now >= self.next_status {
                self.broadcast_status(now);
                self.next_status = now + crate::tree::STATUS_INTERVAL;
            }
        }
    }
}
