//! Many hosts, one Orchestra: what this daemon knows of the other daemons of its cluster,
//! and the link to them over NATS JetStream ([`link`]).
//!
//! Each daemon keeps one record in the cluster's hosts bucket
//! ([`crate::wire::cluster::HostRecord`]: its load, agent types and agents), rewritten on a
//! heartbeat and whenever its agents change; every daemon watches the bucket, so listing the
//! cluster's agents is a local read. A request that names another host's agent, or asks for
//! a session on another host, is forwarded to that host's daemon over NATS request/reply
//! with a token minted for the caller, and its answer returned as is.
//!
//! [`Cluster`] is a part below the API: plain state and the link's command channel. Who
//! reacts to the link's events is [`crate::api::peer`].

pub mod link;
pub mod queue;
pub mod seal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use crate::config::ClusterConfig;
use crate::net::ConnId;
use crate::wire::cluster::HostRecord;

pub use link::{Command, ForwardError, Link, LinkEvent, TicketWriteError};
pub use queue::TicketQueue;

/// A host as this daemon last heard of it.
#[derive(Debug, Clone)]
pub struct KnownHost {
    /// Its last record.
    pub record: HostRecord,
    /// When that record arrived here (by this daemon's clock, so that skewed clocks do not
    /// matter).
    pub heard: Instant,
}

/// The cluster as this daemon sees it. Without `[cluster]` it is empty and inert.
pub struct Cluster {
    /// `[cluster]`.
    settings: ClusterConfig,
    /// The NATS link (`None` without a cluster).
    link: Option<Link>,
    /// Whether the link is connected now.
    connected: bool,
    /// Why it is not, when it last said.
    last_problem: Option<String>,
    /// Every other host heard of, by name.
    hosts: BTreeMap<String, KnownHost>,
    /// Requests forwarded to other hosts and waiting for an answer: forward id → caller,
    /// and the JSON to answer with (`200`) if the owner cannot be asked.
    forwards: HashMap<u64, (ConnId, Option<Vec<u8>>)>,
    /// Forward ids.
    next_forward: u64,
    /// Requests other hosts forwarded here, answered later: their stand-in connection's
    /// serial → where the answer goes.
    serving: HashMap<u64, String>,
    /// Stand-in connection serials.
    next_serving: u64,
    /// This host's record must be rewritten soon (its agents changed).
    publish_due: bool,
    /// Viewers of other hosts stood in for here, by stand-in serial.
    stand_ins: HashMap<u64, StandIn>,
    /// The stand-in serial of each (origin host, viewer connection there).
    stand_in_of: HashMap<(String, usize, u64), u64>,
    /// This host's viewers whose messages went to other hosts, with those hosts.
    tunnels: HashMap<ConnId, BTreeSet<String>>,
    /// The cluster's ticket queue.
    queue: TicketQueue,
    /// This daemon process's random id, written in its record.
    instance: String,
    /// Another daemon's id seen writing this host's record (reported once).
    impostor: Option<String>,
    /// When this part was made (a record of this host older than that is a previous run's).
    born: Instant,
}

/// A viewer on another host, stood in for on this one: it subscribes and types through a
/// stand-in connection, and what that connection is sent goes back to it.
#[derive(Debug, Clone)]
pub struct StandIn {
    /// The viewer's host.
    pub origin: String,
    /// The viewer's connection there.
    pub conn: (usize, u64),
    /// Bytes of frames sent to it and not yet acknowledged.
    pub in_flight: usize,
}

/// Whether `name` can be a host's (or a cluster's) name: 1 to 64 letters, digits, `-`, `_`,
/// so that it is one subject token.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The connection slot of a stand-in connection: a request another host forwarded here is
/// handled like a request on this connection, and its deferred answer is sent back through
/// the cluster instead of a socket.
pub const PEER_CONN_KEY: usize = usize::MAX;

impl Cluster {
    /// The cluster part; starts the link when `[cluster]` names NATS servers. `on_event`
    /// runs on the link's thread for each of its events.
    /// `secret` is the JWT secret every host of the cluster shares: its messages are sealed
    /// with a key derived from it ([`seal`]).
    pub fn new(
        settings: &ClusterConfig,
        secret: &[u8],
        on_event: impl Fn(LinkEvent) + Send + Sync + 'static,
    ) -> Result<Cluster, String> {
        let link = if settings.enabled() {
            let key = seal::SealKey::derive(secret, &settings.name);
            Some(
                Link::start(settings.clone(), key, on_event)
                    .map_err(|e| format!("cannot start the cluster link thread: {e}"))?,
            )
        } else {
            None
        };
        Ok(Cluster {
            settings: settings.clone(),
            link,
            connected: false,
            last_problem: None,
            hosts: BTreeMap::new(),
            forwards: HashMap::new(),
            next_forward: 0,
            serving: HashMap::new(),
            next_serving: 0,
            publish_due: false,
            stand_ins: HashMap::new(),
            stand_in_of: HashMap::new(),
            tunnels: HashMap::new(),
            queue: TicketQueue::default(),
            instance: uuid::Uuid::new_v4().to_string(),
            impostor: None,
            born: Instant::now(),
        })
    }

    /// This daemon process's random id (in its record).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether this daemon is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.link.is_some()
    }

    /// This host's name.
    pub fn me(&self) -> &str {
        &self.settings.host
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// `[cluster]`.
    pub fn settings(&self) -> &ClusterConfig {
        &self.settings
    }

    /// Whether the link is connected to NATS now.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Records what the link said about its connection. Returns whether it just connected
    /// (this host's record should be written at once).
    pub fn on_link_state(&mut self, event: &LinkEvent) -> bool {
        match event {
            LinkEvent::Connected => {
                let fresh = !self.connected;
                self.connected = true;
                self.queue.set_connected(true);
                self.last_problem = None;
                if fresh {
                    log::info!(
                        "cluster {}: connected to NATS as host {}",
                        self.settings.name,
                        self.settings.host
                    );
                }
                true
            }
            LinkEvent::Disconnected => {
                if self.connected {
                    log::warn!(
                        "cluster {}: disconnected from NATS; reconnecting",
                        self.settings.name
                    );
                }
                self.connected = false;
                self.queue.set_connected(false);
                false
            }
            LinkEvent::Watching => {
                // What this host heard of the others before is stale: it takes nothing over
                // until they have had `unreachable_after` to write their records again.
                if self.connected {
                    self.queue.resettle();
                }
                false
            }
            LinkEvent::Lost(why) => {
                if self.last_problem.as_deref() != Some(why) {
                    log::warn!("cluster {}: {why}", self.settings.name);
                }
                self.last_problem = Some(why.clone());
                false
            }
            _ => false,
        }
    }

    /// A host's record changed (or was removed), written `age` ago. This host's own record
    /// is ignored: the daemon knows itself better. Returns whether the host restarted or
    /// went away (its viewers' stand-ins here are stale).
    pub fn on_host(
        &mut self,
        host: String,
        record: Option<HostRecord>,
        age: std::time::Duration,
    ) -> bool {
        if host == self.settings.host {
            // Another daemon writes this host's record: two daemons share one name, and
            // each overwrites the other's agents.
            if let Some(record) = record
                && !record.instance.is_empty()
                && record.instance != self.instance
                && age < self.born.elapsed()
                && self.impostor.as_deref() != Some(record.instance.as_str())
            {
                log::error!(
                    "cluster {}: another daemon (started {}) also calls itself host {}; \
                     give each daemon its own cluster.host",
                    self.settings.name,
                    record.started_at,
                    self.settings.host
                );
                self.impostor = Some(record.instance);
            }
            return false;
        }
        match record {
            Some(record) => {
                let restarted = self
                    .hosts
                    .get(&host)
                    .is_some_and(|known| known.record.started_at != record.started_at);
                // A record read back from the bucket (at start, after a reconnect) counts
                // from when it was written, so a host long gone does not look reachable.
                let now = Instant::now();
                let heard = now.checked_sub(age).unwrap_or(now);
                self.hosts.insert(host, KnownHost { record, heard });
                restarted
            }
            None => self.hosts.remove(&host).is_some(),
        }
    }

    /// Whether `host` reported within `cluster.unreachable_after`.
    pub fn reachable(&self, host: &KnownHost) -> bool {
        host.heard.elapsed() < self.settings.unreachable_after
    }

    /// The other hosts heard of, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &KnownHost> {
        self.hosts.values()
    }

    /// The other host `name`.
    pub fn host(&self, name: &str) -> Option<&KnownHost> {
        self.hosts.get(name)
    }

    /// The other host whose record lists agent `session_id`.
    pub fn owner_of(&self, session_id: &str) -> Option<&KnownHost> {
        self.hosts.values().find(|host| {
            host.record
                .agents
                .iter()
                .any(|agent| agent["session_id"].as_str() == Some(session_id))
        })
    }

    /// Asks for this host's record to be rewritten on the next beat (its agents changed).
    /// Returns whether it was not asked already.
    pub fn agents_changed(&mut self) -> bool {
        let fresh = !self.publish_due;
        self.publish_due = true;
        fresh && self.enabled()
    }

    /// Stores this host's record (while connected: the first record after a connection is
    /// written then, so records never pile up in the queue).
    pub fn publish(&mut self, record: &HostRecord) {
        self.publish_due = false;
        if let Some(link) = self.link.as_ref().filter(|_| self.connected) {
            let bytes = serde_json::to_vec(record).expect("serializable");
            link.send(Command::Publish(bytes));
        }
    }

    /// Sends frames this host broadcast to its observers on to the other hosts'.
    pub fn relay(&self, frames: &[std::sync::Arc<[u8]>]) {
        if let Some(link) = &self.link
            && self.connected
            && !frames.is_empty()
        {
            link.send(Command::Events(frames.to_vec()));
        }
    }

    /// Forwards a request to `host` for the caller on `conn`; the answer comes back as
    /// [`LinkEvent::Forwarded`] and [`Cluster::take_forward`] tells whose it is.
    /// Returns the forward's id, or `None` when the link cannot take it.
    /// `fallback` is the JSON body to answer with if the owner cannot be asked.
    pub fn forward(
        &mut self,
        conn: ConnId,
        host: &str,
        payload: Vec<u8>,
        fallback: Option<Vec<u8>>,
    ) -> Option<u64> {
        let link = self.link.as_ref()?;
        self.next_forward += 1;
        let id = self.next_forward;
        if !link.send(Command::Forward {
            id,
            host: host.to_string(),
            payload,
        }) {
            return None;
        }
        self.forwards.insert(id, (conn, fallback));
        Some(id)
    }

    /// The caller waiting for forward `id`, and its fallback answer.
    pub fn take_forward(&mut self, id: u64) -> Option<(ConnId, Option<Vec<u8>>)> {
        self.forwards.remove(&id)
    }

    /// A stand-in connection for a request another host forwarded, whose answer goes to
    /// `reply`.
    pub fn begin_serving(&mut self, reply: String) -> ConnId {
        self.next_serving += 1;
        let serial = self.next_serving;
        self.serving.insert(serial, reply);
        ConnId {
            key: PEER_CONN_KEY,
            serial,
        }
    }

    /// Publishes `payload` on `subject` (tunnel traffic). Returns whether the link took it.
    pub fn send(&self, subject: String, payload: Vec<u8>) -> bool {
        self.link
            .as_ref()
            .is_some_and(|link| link.send(Command::Send { subject, payload }))
    }

    /// Forgets every stand-in's unacknowledged bytes (acknowledgements may have been lost
    /// with the connection to NATS); returns the stand-ins, to be pumped again.
    pub fn reset_credit(&mut self) -> Vec<ConnId> {
        self.stand_ins
            .iter_mut()
            .map(|(serial, stand_in)| {
                stand_in.in_flight = 0;
                ConnId {
                    key: PEER_CONN_KEY,
                    serial: *serial,
                }
            })
            .collect()
    }

    /// Forgets the stand-ins of `origin`'s viewers (it restarted or went away); returns them.
    pub fn drop_stand_ins_of(&mut self, origin: &str) -> Vec<ConnId> {
        let gone: Vec<u64> = self
            .stand_ins
            .iter()
            .filter(|(_, s)| s.origin == origin)
            .map(|(serial, _)| *serial)
            .collect();
        gone.into_iter()
            .map(|serial| {
                let id = ConnId {
                    key: PEER_CONN_KEY,
                    serial,
                };
                self.drop_stand_in(id);
                id
            })
            .collect()
    }

    /// The subject of `kind` (`in`, `out`, `ack`) of the viewer tunnel of `host`.
    pub fn tunnel_subject(&self, kind: &str, host: &str) -> String {
        link::tunnel_subject(&self.settings.name, kind, host)
    }

    /// Records that this host's viewer `conn` talks to `host`'s sessions.
    pub fn tunneled(&mut self, conn: ConnId, host: &str) {
        self.tunnels
            .entry(conn)
            .or_default()
            .insert(host.to_string());
    }

    /// Whether this host's viewer `conn` talked to `host`'s sessions.
    pub fn has_tunnel(&self, conn: ConnId, host: &str) -> bool {
        self.tunnels
            .get(&conn)
            .is_some_and(|hosts| hosts.contains(host))
    }

    /// The hosts this host's viewer `conn` talked to, forgotten.
    pub fn take_tunnels(&mut self, conn: ConnId) -> BTreeSet<String> {
        self.tunnels.remove(&conn).unwrap_or_default()
    }

    /// The stand-in connection of `origin`'s viewer `conn`, made on first use.
    pub fn stand_in(&mut self, origin: &str, conn: (usize, u64)) -> ConnId {
        let key = (origin.to_string(), conn.0, conn.1);
        let serial = match self.stand_in_of.get(&key) {
            Some(serial) => *serial,
            None => {
                self.next_serving += 1;
                let serial = self.next_serving;
                self.stand_in_of.insert(key, serial);
                self.stand_ins.insert(
                    serial,
                    StandIn {
                        origin: origin.to_string(),
                        conn,
                        in_flight: 0,
                    },
                );
                serial
            }
        };
        ConnId {
            key: PEER_CONN_KEY,
            serial,
        }
    }

    /// The stand-in connection of `origin`'s viewer `conn`, if there is one.
    pub fn existing_stand_in(&self, origin: &str, conn: (usize, u64)) -> Option<ConnId> {
        self.stand_in_of
            .get(&(origin.to_string(), conn.0, conn.1))
            .map(|serial| ConnId {
                key: PEER_CONN_KEY,
                serial: *serial,
            })
    }

    /// The viewer stand-in connection `id` stands for.
    pub fn stand_in_for(&mut self, id: ConnId) -> Option<&mut StandIn> {
        self.stand_ins.get_mut(&id.serial)
    }

    /// Forgets stand-in connection `id`.
    pub fn drop_stand_in(&mut self, id: ConnId) {
        if let Some(stand_in) = self.stand_ins.remove(&id.serial) {
            self.stand_in_of
                .remove(&(stand_in.origin, stand_in.conn.0, stand_in.conn.1));
        }
    }

    /// The cluster's ticket queue.
    pub fn queue(&self) -> &TicketQueue {
        &self.queue
    }

    /// The cluster's ticket queue, to change.
    pub fn queue_mut(&mut self) -> &mut TicketQueue {
        &mut self.queue
    }

    /// Writes `ticket` if its revision is still `revision` (`None`: creates it); `why` says
    /// what to do with the outcome ([`LinkEvent::TicketWritten`]). Gives `why` back when the
    /// link cannot take the write (not connected, or `cluster.max_queued` waiting).
    pub fn write_ticket(
        &mut self,
        ticket: &crate::wire::cluster::QueuedTicket,
        revision: Option<u64>,
        why: queue::Write,
    ) -> Result<(), queue::Write> {
        let Some(link) = self.link.as_ref().filter(|_| self.connected) else {
            return Err(why);
        };
        let value = serde_json::to_vec(ticket).expect("serializable");
        let id = self.queue.begin_write(ticket.clone(), why);
        let sent = link.send(Command::WriteTicket {
            id,
            key: ticket.ticket_id.clone(),
            value,
            revision,
        });
        if sent {
            Ok(())
        } else {
            Err(self.queue.end_write(id, None).expect("just recorded").1)
        }
    }

    /// Sends the answer of the forwarded request on stand-in connection `conn`.
    pub fn answer(&mut self, conn: ConnId, payload: Vec<u8>) {
        if let (Some(reply), Some(link)) = (self.serving.remove(&conn.serial), &self.link) {
            link.send(Command::Answer { reply, payload });
        }
    }
}
