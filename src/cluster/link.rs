//! The cluster link: the NATS client on its own thread, with its own (single-threaded)
//! tokio runtime, so that nothing of it runs in the event loop. The loop sends it
//! [`Command`]s over a channel; it reports [`LinkEvent`]s through a callback that queues a
//! continuation and wakes the loop.
//!
//! What it keeps in NATS: the key-value bucket `<name>-hosts` (JetStream, `replicas`
//! copies), one key per host whose value is the host's [`crate::wire::cluster::HostRecord`];
//! the bucket `<name>-tickets`, one key per queued ticket
//! ([`crate::wire::cluster::QueuedTicket`], written only conditionally on its revision);
//! and one subject per host, `<name>.api.<host>`, on which requests forwarded to that host
//! arrive (NATS request/reply). Both buckets are watched, so reading them is local.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::config::ClusterConfig;

/// The callback the link reports through, shared with the tasks it spawns.
type Report = Arc<dyn Fn(LinkEvent) + Send + Sync>;

/// What the link tells the loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// The link reached NATS and its bucket (again).
    Connected,
    /// The client lost its NATS server (it reconnects by itself).
    Disconnected,
    /// Something the link tried failed; why (it is tried again).
    Lost(String),
    /// The hosts bucket is watched (again): JetStream answers, and every host's record
    /// arrives from now on.
    Watching,
    /// A host's record changed (`None`: it was removed).
    Host {
        /// The host's name.
        host: String,
        /// Its record as stored.
        record: Option<Vec<u8>>,
        /// How long ago it was stored.
        age: Duration,
    },
    /// A request another host forwarded to this one; answer with [`Command::Answer`].
    Request {
        /// Where the answer goes.
        reply: String,
        /// The [`crate::wire::cluster::ForwardedRequest`], encoded.
        payload: Vec<u8>,
    },
    /// Frames another host broadcast to its observers (`agent_status`, `task_update`, ...),
    /// for this host's observers.
    Events(Vec<u8>),
    /// A viewer's message from another host for a session of this one
    /// ([`crate::wire::cluster::TunnelIn`], encoded).
    TunnelIn(Vec<u8>),
    /// Frames from another host for a viewer of this one
    /// ([`crate::wire::cluster::encode_tunnel_batch`]).
    TunnelOut(Vec<u8>),
    /// Credit from another host's viewer ([`crate::wire::cluster::TunnelAck`], encoded).
    TunnelAck(Vec<u8>),
    /// A ticket of the cluster's queue changed (`None`: it was removed).
    Ticket {
        /// The ticket id.
        key: String,
        /// Its [`crate::wire::cluster::QueuedTicket`], encoded.
        value: Option<Vec<u8>>,
        /// Its revision, which a conditional write must name.
        revision: u64,
    },
    /// The outcome of a [`Command::WriteTicket`]: the new revision, or why not.
    TicketWritten {
        /// The write's id.
        id: u64,
        /// The new revision.
        result: Result<u64, TicketWriteError>,
    },
    /// The answer to a request this host forwarded ([`Command::Forward`]).
    Forwarded {
        /// The forward's id.
        id: u64,
        /// The [`crate::wire::cluster::ForwardedResponse`], encoded, or why there is none.
        result: Result<Vec<u8>, ForwardError>,
    },
}

/// Why a forwarded request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// Nobody listens for that host: its daemon is down or not connected.
    NoResponders,
    /// No answer within `cluster.request_timeout`.
    TimedOut,
    /// NATS refused or lost the request.
    Failed(String),
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::NoResponders => f.write_str("its daemon is not connected to the cluster"),
            ForwardError::TimedOut => {
                f.write_str("it did not answer within cluster.request_timeout")
            }
            ForwardError::Failed(why) => write!(f, "NATS failed: {why}"),
        }
    }
}

/// Why a conditional write of a ticket did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketWriteError {
    /// Someone wrote it since the revision named (or, creating it, it exists).
    Conflict,
    /// NATS refused or lost the write; it may or may not have happened.
    Failed(String),
}

impl std::fmt::Display for TicketWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TicketWriteError::Conflict => f.write_str("another host wrote it first"),
            TicketWriteError::Failed(why) => write!(f, "NATS failed: {why}"),
        }
    }
}

/// What the loop asks of the link.
#[derive(Debug)]
pub enum Command {
    /// Store this host's record.
    Publish(Vec<u8>),
    /// Forward a request to `host`; the answer comes back as [`LinkEvent::Forwarded`].
    Forward {
        /// Matches the answer to the request.
        id: u64,
        /// The host that owns what the request names.
        host: String,
        /// The [`crate::wire::cluster::ForwardedRequest`], encoded.
        payload: Vec<u8>,
    },
    /// Send frames this host broadcast to its observers on to every other host's.
    Events(Vec<std::sync::Arc<[u8]>>),
    /// Publish `payload` on `subject` (a tunnel's messages, frames and credit).
    Send {
        /// Where.
        subject: String,
        /// What.
        payload: Vec<u8>,
    },
    /// Write a ticket of the cluster's queue if its revision is still `revision` (`None`:
    /// create it, if no such ticket exists); the outcome comes back as
    /// [`LinkEvent::TicketWritten`].
    WriteTicket {
        /// Matches the outcome to the write.
        id: u64,
        /// The ticket id.
        key: String,
        /// The [`crate::wire::cluster::QueuedTicket`], encoded.
        value: Vec<u8>,
        /// The revision the writer read.
        revision: Option<u64>,
    },
    /// Answer a request another host forwarded ([`LinkEvent::Request`]).
    Answer {
        /// Where the answer goes.
        reply: String,
        /// The [`crate::wire::cluster::ForwardedResponse`], encoded.
        payload: Vec<u8>,
    },
}

/// The running link: send it commands; dropping it stops its thread.
pub struct Link {
    commands: Sender<Command>,
    /// Commands dropped because `cluster.max_queued` were waiting (NATS slow or away).
    dropped: std::sync::atomic::AtomicU64,
}

impl Link {
    /// Starts the link's thread. `on_event` runs on that thread for every [`LinkEvent`].
    pub fn start(
        settings: ClusterConfig,
        key: super::seal::SealKey,
        on_event: impl Fn(LinkEvent) + Send + Sync + 'static,
    ) -> std::io::Result<Link> {
        let (commands, receiver) = tokio::sync::mpsc::channel(settings.max_queued.max(1));
        let on_event: Report = Arc::new(on_event);
        std::thread::Builder::new()
            .name("cluster-link".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => return on_event(LinkEvent::Lost(format!("no runtime: {e}"))),
                };
                runtime.block_on(run(settings, key, receiver, on_event));
            })?;
        Ok(Link {
            commands,
            dropped: Default::default(),
        })
    }

    /// Queues a command without ever blocking the loop. While NATS is slow or away at most
    /// `cluster.max_queued` commands wait; past that a command is dropped (and counted, and
    /// logged now and then) and this returns false, as it does once the link has ended.
    pub fn send(&self, command: Command) -> bool {
        match self.commands.try_send(command) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                let dropped = self
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if dropped.is_power_of_two() {
                    log::warn!(
                        "cluster: {} messages for NATS dropped so far: cluster.max_queued are \
                         waiting (is NATS reachable?)",
                        dropped + 1
                    );
                }
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The subject on which requests forwarded to `host` arrive.
pub fn request_subject(cluster: &str, host: &str) -> String {
    format!("{cluster}.api.{host}")
}

/// The subject on which `host` publishes what it broadcasts to its observers.
pub fn events_subject(cluster: &str, host: &str) -> String {
    format!("{cluster}.events.{host}")
}

/// The subjects of a viewer tunnel to and from `host`: viewers' messages for its sessions
/// (`in`), frames for its viewers (`out`), credit for its sessions' frames (`ack`).
pub fn tunnel_subject(cluster: &str, kind: &str, host: &str) -> String {
    format!("{cluster}.tunnel.{kind}.{host}")
}

/// The key-value bucket of the hosts' records.
pub fn hosts_bucket(cluster: &str) -> String {
    format!("{cluster}-hosts")
}

/// The key-value bucket of the cluster's ticket queue.
pub fn tickets_bucket(cluster: &str) -> String {
    format!("{cluster}-tickets")
}

/// How long a ticket stays in the queue's bucket after its last change.
pub const TICKET_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

async fn connect_options(
    settings: &ClusterConfig,
    on_event: &Report,
    reconnected: tokio::sync::watch::Sender<u64>,
) -> Result<async_nats::ConnectOptions, String> {
    let report = on_event.clone();
    let mut options = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let report = report.clone();
            let reconnected = reconnected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        // The bucket's watch may not have survived the servers: watch again.
                        reconnected.send_modify(|n| *n += 1);
                        report(LinkEvent::Connected)
                    }
                    async_nats::Event::Disconnected => report(LinkEvent::Disconnected),
                    other => log::debug!("cluster: NATS {other}"),
                }
            }
        })
        .name(format!("orchestra {}", settings.host))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(settings.request_timeout));
    if let (Some(user), Some(file)) = (&settings.user, &settings.password_file) {
        let password = std::fs::read_to_string(file)
            .map_err(|e| format!("cluster.password_file {}: {e}", file.display()))?;
        options = options.user_and_password(user.clone(), password.trim().to_string());
    }
    if let Some(file) = &settings.creds_file {
        options = options
            .credentials_file(file)
            .await
            .map_err(|e| format!("cluster.creds_file {}: {e}", file.display()))?;
    }
    if let Some(ca) = &settings.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// Opens a bucket, creating it (with `replicas` copies, one value per key, each kept for
/// `max_age` after its last write) when it does not exist yet.
async fn open_bucket(
    context: &jetstream::Context,
    settings: &ClusterConfig,
    bucket: String,
    description: &str,
    max_age: Duration,
) -> Result<jetstream::kv::Store, String> {
    if let Ok(store) = context.get_key_value(&bucket).await {
        return Ok(store);
    }
    context
        .create_key_value(jetstream::kv::Config {
            bucket: bucket.clone(),
            description: description.into(),
            history: 1,
            max_age,
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create the JetStream bucket {bucket}: {e}"))
}

/// Opens the hosts bucket and the tickets bucket.
async fn buckets(
    context: &jetstream::Context,
    settings: &ClusterConfig,
) -> Result<(jetstream::kv::Store, jetstream::kv::Store), String> {
    // A host that is gone for good disappears a day after its last report.
    let hosts = open_bucket(
        context,
        settings,
        hosts_bucket(&settings.name),
        "Orchestra hosts and their agents",
        Duration::from_secs(24 * 3600),
    )
    .await?;
    let tickets = open_bucket(
        context,
        settings,
        tickets_bucket(&settings.name),
        "Orchestra's queue of delegated tasks",
        TICKET_MAX_AGE,
    )
    .await?;
    Ok((hosts, tickets))
}

async fn run(
    settings: ClusterConfig,
    key: super::seal::SealKey,
    mut commands: Receiver<Command>,
    on_event: Report,
) {
    // Every message in and out is sealed; what does not open is dropped here, with a log
    // line, and never reaches the loop.
    let open = |what: &str, sealed: &[u8]| open_sealed(&key, what, sealed);
    let (reconnected_tx, reconnected) = tokio::sync::watch::channel(0u64);
    let options = match connect_options(&settings, &on_event, reconnected_tx).await {
        Ok(options) => options,
        Err(why) => return on_event(LinkEvent::Lost(why)),
    };
    let client = match options.connect(settings.nats.clone()).await {
        Ok(client) => client,
        Err(e) => return on_event(LinkEvent::Lost(format!("cannot connect to NATS: {e}"))),
    };
    let context = jetstream::new(client.clone());
    // The bucket needs JetStream up, which takes a moment after the servers start.
    let mut delay = Duration::from_millis(100);
    let (store, tickets) = loop {
        match buckets(&context, &settings).await {
            Ok(stores) => break stores,
            Err(why) => {
                on_event(LinkEvent::Lost(why));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    // Each bucket is followed by a task of its own, so that watching it again (after a
    // reconnect, while JetStream elects its leaders) never holds up requests and tunnels.
    tokio::spawn(follow_bucket(
        store.clone(),
        "hosts",
        reconnected.clone(),
        on_event.clone(),
        {
            let key = key.clone();
            move |entry: jetstream::kv::Entry| {
                let record = match entry.operation {
                    jetstream::kv::Operation::Put => {
                        Some(open_sealed(&key, "a host's record", &entry.value)?)
                    }
                    _ => None,
                };
                log::debug!(
                    "cluster: record of host {} ({:?})",
                    entry.key,
                    entry.operation
                );
                // How long ago NATS stored it (by this host's clock; NATS servers and daemons
                // are expected to keep time with NTP).
                let written = entry.created.unix_timestamp_nanos();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                let age = Duration::from_nanos(u64::try_from(now - written).unwrap_or(0));
                Some(LinkEvent::Host {
                    host: entry.key,
                    record,
                    age,
                })
            }
        },
    ));
    tokio::spawn(follow_bucket(
        tickets.clone(),
        "tickets",
        reconnected,
        on_event.clone(),
        {
            let key = key.clone();
            move |entry: jetstream::kv::Entry| {
                let value = match entry.operation {
                    jetstream::kv::Operation::Put => {
                        Some(open_sealed(&key, "a ticket", &entry.value)?)
                    }
                    _ => None,
                };
                Some(LinkEvent::Ticket {
                    key: entry.key,
                    value,
                    revision: entry.revision,
                })
            }
        },
    ));
    let subject = request_subject(&settings.name, &settings.host);
    let mut requests = match client.subscribe(subject.clone()).await {
        Ok(requests) => requests,
        Err(e) => {
            return on_event(LinkEvent::Lost(format!(
                "cannot subscribe to {subject}: {e}"
            )));
        }
    };
    let mut events = match client.subscribe(events_subject(&settings.name, "*")).await {
        Ok(events) => events,
        Err(e) => return on_event(LinkEvent::Lost(format!("cannot subscribe to events: {e}"))),
    };
    let own_events = events_subject(&settings.name, &settings.host);
    let tunnel = |kind| tunnel_subject(&settings.name, kind, &settings.host);
    let (mut tunnel_in, mut tunnel_out, mut tunnel_ack) = match tokio::try_join!(
        client.subscribe(tunnel("in")),
        client.subscribe(tunnel("out")),
        client.subscribe(tunnel("ack")),
    ) {
        Ok(subscriptions) => subscriptions,
        Err(e) => return on_event(LinkEvent::Lost(format!("cannot subscribe to tunnels: {e}"))),
    };
    on_event(LinkEvent::Connected);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Publish(record)) => {
                    // On a task of its own: while JetStream is slow (after an outage, while
                    // it elects leaders) a write waits for its timeout, and the next beat's
                    // record must not queue behind it, nor tunnel traffic.
                    let (store, host, value) = (store.clone(), settings.host.clone(), key.seal(&record));
                    let report = on_event.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.put(&host, value.into()).await {
                            report(LinkEvent::Lost(format!("cannot store this host's record: {e}")));
                        }
                    });
                }
                Some(Command::Events(frames)) => {
                    for frame in frames {
                        let payload = key.seal(&frame).into();
                        if let Err(e) = client.publish(own_events.clone(), payload).await {
                            log::warn!("cluster: cannot send events to the other hosts: {e}");
                        }
                    }
                }
                Some(Command::Send { subject, payload }) => {
                    if let Err(e) = client.publish(subject, key.seal(&payload).into()).await {
                        log::warn!("cluster: cannot send on a viewer tunnel: {e}");
                    }
                }
                Some(Command::Answer { reply, payload }) => {
                    if let Err(e) = client.publish(reply, key.seal(&payload).into()).await {
                        log::warn!("cluster: cannot answer a forwarded request: {e}");
                    }
                }
                Some(Command::WriteTicket { id, key: ticket, value, revision }) => {
                    let tickets = tickets.clone();
                    let report = on_event.clone();
                    let value = key.seal(&value);
                    tokio::spawn(async move {
                        let result = write_ticket(&tickets, &ticket, value, revision).await;
                        report(LinkEvent::TicketWritten { id, result });
                    });
                }
                Some(Command::Forward { id, host, payload }) => {
                    let client = client.clone();
                    let subject = request_subject(&settings.name, &host);
                    let timeout = settings.request_timeout;
                    let report = on_event.clone();
                    let key = key.clone();
                    tokio::spawn(async move {
                        let result = forward(&client, subject, key.seal(&payload), timeout)
                            .await
                            .and_then(|answer| {
                                key.open(&answer).map(<[u8]>::to_vec).ok_or_else(|| {
                                    ForwardError::Failed("an answer without a valid seal".into())
                                })
                            });
                        report(LinkEvent::Forwarded { id, result });
                    });
                }
            },
            event = events.next() => match event {
                Some(message) if message.subject.as_str() != own_events => {
                    if let Some(frame) = open("an event", &message.payload) {
                        on_event(LinkEvent::Events(frame));
                    }
                }
                Some(_) => {}
                None => return on_event(LinkEvent::Lost("the events subscription ended".into())),
            },
            Some(message) = tunnel_in.next() => {
                if let Some(payload) = open("a viewer's message", &message.payload) {
                    on_event(LinkEvent::TunnelIn(payload));
                }
            }
            Some(message) = tunnel_out.next() => {
                if let Some(payload) = open("frames for a viewer", &message.payload) {
                    on_event(LinkEvent::TunnelOut(payload));
                }
            }
            Some(message) = tunnel_ack.next() => {
                if let Some(payload) = open("a viewer's credit", &message.payload) {
                    on_event(LinkEvent::TunnelAck(payload));
                }
            }
            message = requests.next() => match message {
                Some(message) => match message.reply {
                    Some(reply) => {
                        if let Some(payload) = open("a forwarded request", &message.payload) {
                            on_event(LinkEvent::Request { reply: reply.to_string(), payload });
                        }
                    }
                    None => log::warn!("cluster: a forwarded request without a reply subject; ignored"),
                },
                None => return on_event(LinkEvent::Lost("the request subscription ended".into())),
            },
        }
    }
}

/// `sealed` opened, or `None` (with a log line) when its seal does not check.
fn open_sealed(key: &super::seal::SealKey, what: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    let opened = key.open(sealed).map(<[u8]>::to_vec);
    if opened.is_none() {
        log::warn!(
            "cluster: {what} without a valid seal ({} bytes); dropped",
            sealed.len()
        );
    }
    opened
}

/// Follows bucket `what` for as long as the link lives: its current values, then every
/// change, each turned into an event by `to_event` (`None`: dropped). It watches again after
/// the client reconnected (`reconnected` changes) or the watch failed. After each new watch
/// of the hosts bucket it reports [`LinkEvent::Watching`].
async fn follow_bucket(
    store: jetstream::kv::Store,
    what: &'static str,
    mut reconnected: tokio::sync::watch::Receiver<u64>,
    on_event: Report,
    to_event: impl Fn(jetstream::kv::Entry) -> Option<LinkEvent>,
) {
    loop {
        reconnected.borrow_and_update();
        let mut watch = watch_bucket(&store, what, &on_event).await;
        if what == "hosts" {
            on_event(LinkEvent::Watching);
        }
        loop {
            tokio::select! {
                changed = reconnected.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        if let Some(event) = to_event(entry) {
                            on_event(event);
                        }
                    }
                    // Its consumer lived on a server that went away: watch again (the
                    // current values come first, so nothing is missed).
                    Some(Err(e)) => {
                        on_event(LinkEvent::Lost(format!("the {what} bucket's watch failed: {e}")));
                        break;
                    }
                    None => {
                        on_event(LinkEvent::Lost(format!("the {what} bucket's watch ended")));
                        break;
                    }
                },
            }
        }
    }
}

/// Writes a ticket if its revision is still `revision` (`None`: creates it).
async fn write_ticket(
    tickets: &jetstream::kv::Store,
    key: &str,
    value: Vec<u8>,
    revision: Option<u64>,
) -> Result<u64, TicketWriteError> {
    use jetstream::kv::{CreateErrorKind, UpdateErrorKind};
    match revision {
        None => tickets
            .create(key, value.into())
            .await
            .map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => TicketWriteError::Conflict,
                _ => TicketWriteError::Failed(e.to_string()),
            }),
        Some(revision) => tickets
            .update(key, value.into(), revision)
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => TicketWriteError::Conflict,
                _ => TicketWriteError::Failed(e.to_string()),
            }),
    }
}

/// A watch of every key of a bucket, starting with the current values; retried (with a
/// growing pause) until JetStream answers, which after NATS restarts takes a few seconds.
async fn watch_bucket(
    store: &jetstream::kv::Store,
    what: &str,
    on_event: &Report,
) -> jetstream::kv::Watch {
    let mut delay = Duration::from_millis(100);
    loop {
        match store.watch_with_history(">").await {
            Ok(watch) => {
                log::debug!("cluster: watching the {what} bucket");
                return watch;
            }
            Err(e) => {
                on_event(LinkEvent::Lost(format!(
                    "cannot watch the {what} bucket: {e}"
                )));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn forward(
    client: &async_nats::Client,
    subject: String,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, ForwardError> {
    match tokio::time::timeout(timeout, client.request(subject, payload.into())).await {
        Err(_) => Err(ForwardError::TimedOut),
        Ok(Ok(message)) => Ok(message.payload.to_vec()),
        Ok(Err(e)) => Err(match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => ForwardError::NoResponders,
            async_nats::client::RequestErrorKind::TimedOut => ForwardError::TimedOut,
            _ => ForwardError::Failed(e.to_string()),
        }),
    }
}
