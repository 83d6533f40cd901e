//! Configuration: the TOML file format, its defaults, and every named limit.
//!
//! Precedence is built-in defaults < config file < command-line flags < environment
//! (`ORCHESTRA_JWT_SECRET`). This module only parses and validates; it never opens sockets
//! or starts anything.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Environment variable that, when set, supplies the HS256 secret.
pub const SECRET_ENV: &str = "ORCHESTRA_JWT_SECRET";

/// The complete, validated configuration of one daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/WebSocket server binds to (`"localhost:PORT"` means 127.0.0.1).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Host names clients may use in `Host` (DNS-rebinding protection). Empty: on a loopback
    /// `listen`, only `localhost` and the loopback addresses; elsewhere, any. `"*"`: any.
    pub allowed_hosts: Vec<String>,
    /// Directory for the JWT secret, the private tmux socket and other runtime files.
    pub state_dir: PathBuf,
    /// Worker threads for quick blocking work off the loop: tmux commands, /proc reads.
    pub workers: usize,
    /// Worker threads that end process trees (each waits up to `sessions.kill_grace`) and
    /// poll tmux for exit statuses. Kept apart so stubborn processes never delay spawns.
    pub kill_workers: usize,
    /// Worker threads for slow work off the loop: git and directory scans for task
    /// workspaces. Kept apart so that slow repositories never delay spawns, reads or kills.
    pub slow_workers: usize,
    /// Most jobs that may wait for a worker, per pool; a request whose job would wait
    /// beyond it gets `503 OVERLOADED` at once instead of queueing without end.
    pub max_queued_jobs: usize,
    /// How long a starting daemon waits for the state directory's lock before it says
    /// another daemon is using it (a daemon that was just killed can leave a child holding
    /// the lock for a moment).
    #[serde(with = "duration_text")]
    pub state_lock_wait: Duration,
    /// Token verification.
    pub auth: AuthConfig,
    /// Connection and request limits.
    pub limits: Limits,
    /// What a spawn request may ask for and how sessions are watched.
    pub sessions: SessionPolicy,
    /// How the daemon runs tmux.
    pub tmux: TmuxConfig,
    /// `[pty]`: the direct pseudo-terminal backend.
    pub pty: PtyConfig,
    /// WebSocket connections (`/ws/observe`).
    pub websocket: WebSocketConfig,
    /// Pane output capture, backlog and input.
    pub panes: PaneConfig,
    /// Delegated tasks: queueing, timeouts, verification.
    pub tasks: TasksConfig,
    /// Rate limits per caller.
    pub rate_limits: RateLimitConfig,
    /// Hook events from agent CLIs (`orchestra hook`).
    pub hooks: HooksConfig,
    /// `[web]`: the browser dashboard and its logins.
    pub web: WebConfig,
    /// `[metrics]`: `GET /metrics`.
    pub metrics: MetricsConfig,
    /// `[tools]`: what an agent may do through the daemon's tools without a person.
    pub tools: ToolsConfig,
    /// `[cluster]`: several daemons as one Orchestra over NATS JetStream (off unless `nats`
    /// names servers).
    pub cluster: ClusterConfig,
    /// Agent types by name; built-in defaults merged with `[agents.<type>]` tables.
    #[serde(deserialize_with = "deserialize_agents")]
    pub agents: BTreeMap<String, AgentType>,
}

/// Signature algorithms a token may be verified with. Exactly one is accepted at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenAlgorithm {
    /// HMAC-SHA256 with the shared secret (the default).
    HS256,
    /// Ed25519 signatures checked with `public_key_file`.
    EdDSA,
    /// RSA PKCS#1 v1.5 SHA-256 signatures checked with `public_key_file`.
    RS256,
}

/// `[auth]`: how bearer tokens are verified.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The pinned algorithm; tokens signed with anything else are rejected.
    pub algorithm: TokenAlgorithm,
    /// HS256 secret given inline (prefer `ORCHESTRA_JWT_SECRET` or the generated file).
    pub jwt_secret: Option<String>,
    /// File holding the HS256 secret; default `<state_dir>/jwt_secret`, generated on first start.
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key for `EdDSA` or `RS256`.
    pub public_key_file: Option<PathBuf>,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`.
    #[serde(with = "duration_text")]
    pub leeway: Duration,
}

impl fmt::Debug for AuthConfig {
    // Hand-written so that a secret never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("public_key_file", &self.public_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: TokenAlgorithm::HS256,
            jwt_secret: None,
            jwt_secret_file: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(10),
        }
    }
}

/// `[limits]`: every cap on what a client may make the daemon hold or wait for.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open client connections; further connections get `503` and are closed.
    pub max_connections: usize,
    /// Bytes in a request head (request line and headers); more is `431`.
    pub max_head_bytes: usize,
    /// Bytes in the request target; more is `414`.
    pub max_uri_bytes: usize,
    /// Header lines in a request; more is `431`.
    pub max_headers: usize,
    /// Bytes in a request body; more is `413`.
    pub max_body_bytes: usize,
    /// Time to receive a complete request head once its first byte arrived; then `408`.
    #[serde(with = "duration_text")]
    pub head_timeout: Duration,
    /// Time to receive a complete body once its head arrived; then `408`.
    #[serde(with = "duration_text")]
    pub body_timeout: Duration,
    /// Time a keep-alive connection may sit without a request before it is closed.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Time a response may wait for the client to read it before the connection is dropped.
    #[serde(with = "duration_text")]
    pub write_timeout: Duration,
    /// Time a shutting-down daemon waits for in-flight requests to finish.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_head_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_headers: 64,
            max_body_bytes: 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[sessions]`: what spawn requests may ask for, and how sessions are watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionPolicy {
    /// Directories a `working_dir` must lie under after symlinks are resolved (`~` is the
    /// home directory of the user running the daemon).
    pub allowed_roots: Vec<PathBuf>,
    /// Environment keys on the dangerous list that spawn requests may nevertheless set.
    pub allowed_env: Vec<String>,
    /// Most agent sessions alive at once; further spawns get `503`.
    pub max_sessions: usize,
    /// Most variables in a spawn request's `env`.
    pub max_env_vars: usize,
    /// Most bytes in one `env` value.
    pub max_env_value_bytes: usize,
    /// Quiet time after which a running agent is reported `idle`.
    #[serde(with = "duration_text")]
    pub idle_after: Duration,
    /// Time between the polite signals of a kill (SIGHUP, SIGTERM) and SIGKILL.
    #[serde(with = "duration_text")]
    pub kill_grace: Duration,
    /// Time an agent may be `working` with no output and no hook event before its activity
    /// is reported `stuck`.
    #[serde(with = "duration_text")]
    pub stuck_after: Duration,
    /// Messages and replies kept per session (`GET /api/agents/{id}/messages`), in memory
    /// and in `<state_dir>/history`.
    pub max_history: usize,
    /// Longest message or reply kept in a session's history; a longer one is cut to this
    /// many bytes, ending with a marker that says so.
    pub max_history_message_bytes: usize,
    /// Most bytes of messages kept per session; past it the oldest are forgotten.
    pub max_history_bytes: usize,
    /// Most bytes of messages kept for all sessions together; past it the oldest messages of
    /// the session that keeps the most are forgotten.
    pub max_history_total_bytes: usize,
    /// Largest answer of `GET /api/agents/{id}/messages`; older messages are on further pages
    /// (`next_before`).
    pub max_messages_page_bytes: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            allowed_roots: vec![PathBuf::from("~")],
            allowed_env: Vec::new(),
            max_sessions: 64,
            max_env_vars: 64,
            max_env_value_bytes: 32 * 1024,
            idle_after: Duration::from_secs(10),
            kill_grace: Duration::from_secs(3),
            stuck_after: Duration::from_secs(600),
            max_history: 200,
            max_history_message_bytes: 256 * 1024,
            max_history_bytes: 16 << 20,
            max_history_total_bytes: 256 << 20,
            max_messages_page_bytes: 4 << 20,
        }
    }
}

/// `[hooks]`: events that agent CLIs report through `orchestra hook` on the private hook
/// socket (`<state_dir>/hook.sock`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Largest hook message (the CLI's JSON, e.g. a long last reply); longer ones are dropped.
    pub max_message_bytes: usize,
    /// Time a hook connection may take to send its message before it is dropped.
    #[serde(with = "duration_text")]
    pub receive_timeout: Duration,
    /// Longest an agent's hook waits for the daemon before it lets the agent go on.
    #[serde(with = "duration_text")]
    pub client_timeout: Duration,
    /// Time a hook connection may stay silent before its message is complete; then it is
    /// closed (`receive_timeout` still bounds the whole message).
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// How long the daemon keeps writing an answer (a hook's, a tool call's) that the socket
    /// did not take at once; an answer its reader has not taken whole by then is closed.
    #[serde(with = "duration_text")]
    pub answer_timeout: Duration,
    /// Hook connections handled at once (and, apart, answers waiting for their readers:
    /// one more is closed unfinished). Past it, the oldest connection that has not yet
    /// sent its session's credential is closed to make room; if there is none, the new one is.
    pub max_connections: usize,
    /// Hook connections one session may have open with unfinished messages; more, once their
    /// credential arrives, are refused with an error answer.
    pub max_connections_per_session: usize,
    /// How long a tool permission asked of observers (`approve_tool`) waits for an answer
    /// before the agent asks in its own terminal instead.
    #[serde(with = "duration_text")]
    pub approval_timeout: Duration,
    /// Permission requests waiting for an answer at once, all sessions together; past it the
    /// agent asks in its own terminal.
    pub max_pending_approvals: usize,
    /// Permission requests one session may have waiting at once; more are refused with an
    /// error answer (the agent asks in its own terminal).
    pub max_pending_approvals_per_session: usize,
    /// Input to a new session of a hooked CLI waits until, after its SessionStart, its
    /// screen was drawn and then quiet this long: a CLI drops what is typed before its
    /// prompt exists.
    #[serde(with = "duration_text")]
    pub prompt_settle: Duration,
    /// Longest such input waits (from the spawn, and again from SessionStart) before it is
    /// typed anyway.
    #[serde(with = "duration_text")]
    pub prompt_wait: Duration,
    /// When a hooked CLI waiting at its prompt has not confirmed a typed message this long
    /// after its Enter (a busy TUI can read the paste and its Enter as one paste), Enter is
    /// pressed again; each further wait is twice as long.
    #[serde(with = "duration_text")]
    pub submit_check: Duration,
    /// How often Enter is pressed again for one message (`0`: never).
    pub submit_retries: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            max_message_bytes: 1 << 20,
            receive_timeout: Duration::from_secs(5),
            client_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            answer_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_connections_per_session: 8,
            approval_timeout: Duration::from_secs(120),
            max_pending_approvals: 64,
            max_pending_approvals_per_session: 16,
            prompt_settle: Duration::from_millis(300),
            prompt_wait: Duration::from_secs(15),
            submit_check: Duration::from_secs(2),
            submit_retries: 3,
        }
    }
}

/// `[web]`: the dashboard served at `/` and how browsers log in (one-time login links
/// exchanged for a session cookie).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the dashboard at `/`; when false, `/` and its assets answer 404 (the API and
    /// browser logins still work).
    pub dashboard: bool,
    /// How long a login link (`orchestra open`) may wait before it is used; it works once.
    #[serde(with = "duration_text")]
    pub login_code_ttl: Duration,
    /// Lifetime of a browser session (its cookie), from login.
    #[serde(with = "duration_text")]
    pub session_ttl: Duration,
    /// Login links waiting to be used at once; more are refused until some are used or expire.
    pub max_login_codes: usize,
    /// Login links one subject (a token's `sub`) may have waiting at once.
    pub max_login_codes_per_subject: usize,
    /// Login links made with observe-only tokens waiting at once; the rest of
    /// `max_login_codes` is kept for callers with the control scope.
    pub max_observe_login_codes: usize,
    /// Always mark the session cookie `Secure` (send it over HTTPS only). Without it, the
    /// cookie is `Secure` when the request came through a TLS proxy that says so with
    /// `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            dashboard: true,
            login_code_ttl: Duration::from_secs(300),
            session_ttl: Duration::from_secs(12 * 3600),
            max_login_codes: 100,
            max_login_codes_per_subject: 10,
            max_observe_login_codes: 50,
            secure_cookie: false,
        }
    }
}

/// `[tools]`: what an agent may do through the daemon's tools (`orchestra mcp`, with its
/// session's hook credential). With `approve` (the default) nothing an agent asks for runs
/// before a person decides: a `delegate_task` is proposed like a plan (`approve_plan`), a
/// `send_message` waits for an `approve_tool` answer. `allow` lets it act at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// `delegate_task`: proposed for approval, or started at once.
    pub delegate_task: ToolPolicy,
    /// `send_message`: typed once a person allows it, or at once.
    pub send_message: ToolPolicy,
}

/// Whether a tool of agents acts at once or waits for a person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolPolicy {
    /// A person decides first (the default).
    #[default]
    Approve,
    /// The agent's call acts at once.
    Allow,
}

/// `[metrics]`: Prometheus metrics at `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics`; when false it answers 404.
    pub enabled: bool,
    /// A file holding a static bearer token that may read `/metrics` and nothing else (for
    /// a Prometheus scraper's `bearer_token_file`); without it, `/metrics` needs a JWT with
    /// the observe scope, like the rest of the API.
    pub token_file: Option<PathBuf>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            token_file: None,
        }
    }
}

/// `[cluster]`: daemons on several hosts that form one Orchestra over NATS JetStream. Off
/// while `nats` is empty: the single-host daemon is unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers to connect to (several seeds of one NATS cluster), e.g.
    /// `["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]`.
    pub nats: Vec<String>,
    /// This daemon's name in the cluster (letters, digits, `-`, `_`); default: the machine's
    /// hostname with other characters turned into `-`.
    pub host: String,
    /// The cluster's name: the prefix of every subject and bucket, so that two clusters can
    /// share one NATS and never see each other.
    pub name: String,
    /// NATS user (with `password_file`).
    pub user: Option<String>,
    /// File holding the NATS user's password.
    pub password_file: Option<PathBuf>,
    /// NATS credentials file (a user JWT and seed), instead of `user`.
    pub creds_file: Option<PathBuf>,
    /// CA certificate(s) to verify the NATS servers with; setting it requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for NATS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// Client key for NATS (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// JetStream replicas of everything the cluster stores (at most the number of NATS
    /// servers; 3 for a three-node NATS cluster that survives losing one).
    pub replicas: usize,
    /// A host that has not reported for this long is unreachable: it is shown so, and
    /// nothing is sent to it.
    #[serde(with = "duration_text")]
    pub unreachable_after: Duration,
    /// How long a request forwarded to another host may take before it is answered `503`.
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// Messages for NATS that may wait while it is slow or away (records, events, tunnel
    /// frames, forwarded requests); more are dropped, counted and logged.
    pub max_queued: usize,
    /// The most `retries` a delegation may ask for: how many times a ticket of the cluster's
    /// queue runs again after the host running it was lost.
    pub max_retries: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: Vec::new(),
            host: String::new(),
            name: "orchestra".into(),
            user: None,
            password_file: None,
            creds_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            replicas: 1,
            unreachable_after: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            max_queued: 4096,
            max_retries: 3,
        }
    }
}

impl ClusterConfig {
    /// Whether this daemon is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    /// Fills in the host name and checks the section.
    fn finish(&mut self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        if self.host.is_empty() {
            self.host = default_host_name();
        }
        let name_ok = |text: &str| {
            !text.is_empty()
                && text.len() <= 64
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&self.host) {
            return Err(ConfigError(format!(
                "cluster.host {:?}: use 1 to 64 letters, digits, '-' or '_'",
                self.host
            )));
        }
        if !name_ok(&self.name) {
            return Err(ConfigError(format!(
                "cluster.name {:?}: use 1 to 64 letters, digits, '-' or '_'",
                self.name
            )));
        }
        if self.host == "any" {
            return Err(ConfigError(
                "cluster.host cannot be \"any\": spawn requests use it for the least loaded host"
                    .into(),
            ));
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err(ConfigError(
                "cluster.user and cluster.password_file go together".into(),
            ));
        }
        if self.user.is_some() && self.creds_file.is_some() {
            return Err(ConfigError(
                "cluster: use either user + password_file or creds_file, not both".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "cluster.tls_cert and cluster.tls_key go together".into(),
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(ConfigError("cluster.replicas must be 1 to 5".into()));
        }
        if self.unreachable_after < Duration::from_secs(1) || self.request_timeout.is_zero() {
            return Err(ConfigError(
                "cluster.unreachable_after must be at least 1s and cluster.request_timeout above 0"
                    .into(),
            ));
        }
        for file in [
            &mut self.password_file,
            &mut self.creds_file,
            &mut self.tls_ca,
            &mut self.tls_cert,
            &mut self.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            *file = absolute(&expand_home(file))?;
        }
        Ok(())
    }
}

/// The machine's hostname as a cluster host name: characters other than letters, digits,
/// `-` and `_` become `-`.
fn default_host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() { "host".into() } else { name }
}

/// Where an agent type's sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A session in the daemon's private tmux server; output through `pipe-pane`. People
    /// can also `tmux attach` to it.
    #[default]
    Tmux,
    /// A pseudo-terminal the daemon reads directly, held by `orchestra pty-hold` so the agent
    /// survives daemon restarts. One hop less for every byte; no tmux to attach to.
    Pty,
}

impl Backend {
    /// The wire and config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Tmux => "tmux",
            Backend::Pty => "pty",
        }
    }
}

/// `[pty]`: the direct pseudo-terminal backend (agent types with `backend = "pty"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PtyConfig {
    /// Output since the last screen checkpoint that a holder keeps for the next daemon, and
    /// the most the daemon queues for a slow holder; beyond it the oldest bytes are dropped
    /// and a restarted daemon tells viewers.
    pub ring_bytes: usize,
    /// After output, how soon the daemon leaves a checkpoint of the screen with the holder
    /// (the screen a restarted daemon replays the holder's output onto).
    #[serde(with = "duration_text")]
    pub checkpoint_after: Duration,
    /// How long the daemon waits for a holder to start or to hand its terminal over.
    #[serde(with = "duration_text")]
    pub handover_timeout: Duration,
}

impl Default for PtyConfig {
    fn default() -> Self {
        PtyConfig {
            ring_bytes: 1024 * 1024,
            checkpoint_after: Duration::from_millis(200),
            handover_timeout: Duration::from_secs(10),
        }
    }
}

/// Which hook protocol an agent CLI speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookStyle {
    /// Claude Code: the daemon passes `--settings FILE` whose hooks run `orchestra hook`.
    Claude,
    /// Gemini CLI: a home of its own per session (`GEMINI_CLI_HOME`) whose settings are the
    /// user's plus hooks that run `orchestra hook` (see `agents::gemini`).
    Gemini,
    /// Codex: hooks that run `orchestra hook`, passed with their trust as `-c` overrides
    /// (see `agents::codex`); the session counts as started when a screen rule sees its
    /// prompt, since Codex reports SessionStart only with the first prompt.
    Codex,
}

/// `[tmux]`: the tmux binary and the shape of the panes it creates.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TmuxConfig {
    /// Program to run (looked up in `PATH` when it has no slash).
    pub binary: PathBuf,
    /// A tmux invocation that has not finished by then is killed and reported as failed.
    #[serde(with = "duration_text")]
    pub command_timeout: Duration,
    /// Config file the private tmux server loads; default none (`/dev/null`), so a user's
    /// `~/.tmux.conf` cannot change how agent panes behave.
    pub config_file: Option<PathBuf>,
    /// Width of new panes, in columns.
    pub width: u16,
    /// Height of new panes, in rows.
    pub height: u16,
}

impl Default for TmuxConfig {
    fn default() -> Self {
        TmuxConfig {
            binary: PathBuf::from("tmux"),
            command_timeout: Duration::from_secs(10),
            config_file: None,
            width: 200,
            height: 50,
        }
    }
}

/// `[websocket]`: observer connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Origins (`scheme://host[:port]`) whose pages may connect. Empty: only the daemon's own
    /// origin (the `Origin` must match the request's `Host`). Clients that send no `Origin`
    /// (non-browser clients) are always accepted.
    pub allowed_origins: Vec<String>,
    /// Largest client message; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Output queued to one connection before the daemon stops pulling more pane output for
    /// it (the viewer then falls behind and is resynced if it stays behind).
    pub send_window_bytes: usize,
    /// Hard cap on one connection's queued output (events included); past it the connection
    /// is closed with 4001.
    pub max_outbound_bytes: usize,
    /// Kernel send buffer of an upgraded connection (`SO_SNDBUF`), so that a viewer that
    /// stops reading cannot pin megabytes of kernel memory; 0 keeps the kernel's auto-tuning.
    pub socket_send_buffer: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Resyncs a slow viewer may need within a minute before it is closed with 4001.
    pub max_resyncs_per_minute: usize,
    /// Quiet time after which the daemon pings a client.
    #[serde(with = "duration_text")]
    pub ping_interval: Duration,
    /// Time a pinged client has to answer before it is closed with 4000.
    #[serde(with = "duration_text")]
    pub pong_timeout: Duration,
    /// Lifetime of a one-time connect ticket from `POST /api/ws-ticket`.
    #[serde(with = "duration_text")]
    pub ticket_ttl: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            allowed_origins: Vec::new(),
            max_message_bytes: 64 * 1024,
            send_window_bytes: 256 * 1024,
            max_outbound_bytes: 8 * 1024 * 1024,
            socket_send_buffer: 256 * 1024,
            max_subscriptions: 64,
            max_resyncs_per_minute: 10,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
            ticket_ttl: Duration::from_secs(30),
        }
    }
}

/// `[panes]`: output capture, backlog and input.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaneConfig {
    /// Raw output kept per pane for resume (`since`) and catch-up.
    pub backlog_bytes: usize,
    /// Encoded output frames kept per pane and shared by all viewers.
    pub live_frame_bytes: usize,
    /// Typed input queued per pane before further input is refused.
    pub max_input_bytes: usize,
    /// How often the daemon checks that every live pane's output pipe still delivers.
    #[serde(with = "duration_text")]
    pub health_interval: Duration,
    /// Quiet time after output before the screen of an agent with screen rules is checked.
    #[serde(with = "duration_text")]
    pub screen_check_after: Duration,
    /// Widest pane a `resize_terminal` may ask for, in columns.
    pub max_cols: u16,
    /// Tallest pane a `resize_terminal` may ask for, in rows.
    pub max_rows: u16,
    /// Longest a viewer more than half a backlog behind may hold a pane's reading back, per
    /// stall, so that it loses nothing; then it is no longer waited for (`0s`: never wait).
    #[serde(with = "duration_text")]
    pub max_stall: Duration,
    /// Newest output per pane that the terminal emulator keeps unparsed and parses exactly
    /// whenever a screen is needed (a snapshot, a checkpoint, screen rules) or the output
    /// pauses (at most `backlog_bytes`: a larger window is taken as the backlog's size).
    pub screen_window: usize,
    /// Output older than the window that the emulator parses per second per pane (and the
    /// largest burst); output beyond this rate is skimmed for its control sequences and its
    /// text, which the window redraws in a flood, dropped.
    pub screen_parse_rate: u64,
    /// Bytes read per loop turn from the panes that flood, shared between them (at least
    /// one 4 KiB read each), and the most one read of a quiet pane takes: a loop turn reads
    /// about this much however many agents flood, and keystrokes and quiet panes are handled
    /// between two floods' reads. At least 4096.
    pub read_budget: usize,
}

/// The least `panes.read_budget` may be, and the least a flooding pane is read per loop
/// turn however many flood: one read of a pseudo-terminal.
pub const MIN_READ_BUDGET: usize = 4096;

impl Default for PaneConfig {
    fn default() -> Self {
        PaneConfig {
            backlog_bytes: 4 * 1024 * 1024,
            live_frame_bytes: 2 * 1024 * 1024,
            max_input_bytes: 1024 * 1024,
            health_interval: Duration::from_secs(15),
            screen_check_after: Duration::from_millis(300),
            max_cols: 1000,
            max_rows: 500,
            max_stall: Duration::from_millis(200),
            screen_window: 256 * 1024,
            screen_parse_rate: 256 * 1024,
            read_budget: 64 * 1024,
        }
    }
}

/// A rate: `requests` per `window` (a token bucket of `requests` that refills over
/// `window`). `requests = 0` switches the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests allowed per window (and the largest burst).
    pub requests: u32,
    /// The window.
    #[serde(with = "duration_text")]
    pub window: Duration,
}

impl Rate {
    /// `requests` per minute.
    pub const fn per_minute(requests: u32) -> Rate {
        Rate {
            requests,
            window: Duration::from_secs(60),
        }
    }
}

/// `[rate_limits]`: token buckets per caller (the token's `sub`; the peer address for
/// requests whose credentials fail).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `POST /api/agents/spawn`, per caller.
    pub spawn: Rate,
    /// `POST /api/delegate`, per caller.
    pub delegate: Rate,
    /// Messages from one WebSocket connection.
    pub ws_messages: Rate,
    /// Requests with missing or invalid credentials, per peer address; past it even those
    /// get `429` instead of `401`.
    pub auth_failures: Rate,
    /// Messages a WebSocket client may send past its limit (each refused with an error) before
    /// the connection is closed with 4002.
    pub ws_flood_close_after: u32,
    /// Callers tracked per limit; past it, the least informative buckets are forgotten.
    pub max_tracked: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            spawn: Rate::per_minute(10),
            delegate: Rate::per_minute(100),
            ws_messages: Rate::per_minute(600),
            auth_failures: Rate::per_minute(60),
            ws_flood_close_after: 100,
            max_tracked: 10_000,
        }
    }
}

/// `[tasks]`: delegated tasks (`POST /api/delegate`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// Tasks running at once, all agent types together; further tickets wait as `pending`.
    pub max_running: usize,
    /// Pending tickets; further delegations get `503 OVERLOADED`.
    pub max_queued: usize,
    /// Timeout of a task whose request has no `timeout_ms`.
    #[serde(with = "duration_text")]
    pub default_timeout: Duration,
    /// Largest `timeout_ms` a request may ask for.
    #[serde(with = "duration_text")]
    pub max_timeout: Duration,
    /// How often observers get a `task_update` (with `elapsed_ms`) for each running task.
    #[serde(with = "duration_text")]
    pub progress_interval: Duration,
    /// Keep a finished task's session (and its last screen) listed until it is deleted;
    /// by default it is removed once the result is recorded.
    pub keep_sessions: bool,
    /// Working directory of tasks that name none and have no delegating session; default:
    /// the first of `sessions.allowed_roots`.
    pub default_workspace: Option<PathBuf>,
    /// Time the test command may run before it is stopped and counted as failed.
    #[serde(with = "duration_text")]
    pub test_timeout: Duration,
    /// Tail of the test command's and the agent's output kept in a result.
    pub test_output_bytes: usize,
    /// Largest task text plus context (the prompt is one argv element).
    pub max_task_bytes: usize,
    /// Most files a non-git working directory's snapshot records.
    pub max_snapshot_files: usize,
    /// Test command per directory: the longest prefix of a task's working directory wins.
    pub test_commands: BTreeMap<PathBuf, Vec<String>>,
    /// The ticket store; default `<state_dir>/tasks.redb`.
    pub store_file: Option<PathBuf>,
    /// Finished tickets kept (in memory and in the store); the oldest are forgotten first.
    pub keep_finished: usize,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            max_running: 4,
            max_queued: 1000,
            default_timeout: Duration::from_secs(30 * 60),
            max_timeout: Duration::from_secs(24 * 3600),
            progress_interval: Duration::from_secs(5),
            keep_sessions: false,
            default_workspace: None,
            test_timeout: Duration::from_secs(10 * 60),
            test_output_bytes: 8192,
            max_task_bytes: 64 * 1024,
            max_snapshot_files: 20_000,
            test_commands: BTreeMap::new(),
            store_file: None,
            keep_finished: 10_000,
        }
    }
}

impl TasksConfig {
    /// The configured test command for `dir` (the longest matching directory prefix).
    pub fn test_command_for(&self, dir: &Path) -> Option<&Vec<String>> {
        self.test_commands
            .iter()
            .filter(|(prefix, _)| dir.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.components().count())
            .map(|(_, argv)| argv)
    }
}

/// `[agents.<type>]`: how to run one kind of agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentType {
    /// Interactive command as an argv array (never a shell string).
    pub command: Vec<String>,
    /// Extra environment for every session of this type.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// One-shot command for delegated tasks. The prompt goes to it on its standard input (a
    /// private file) when no element has a placeholder; `{prompt_file}` stands for the path
    /// of that private file instead; `{prompt}` puts the text itself in the argument, where
    /// every local user can read it (`ps`), and is logged as a warning when a task uses it.
    #[serde(default)]
    pub headless: Option<Vec<String>>,
    /// Pause between typing a `user_message` and pressing Enter (TUIs such as Codex treat an
    /// Enter that arrives with a paste as a newline).
    #[serde(default = "default_submit_delay", with = "duration_text")]
    pub submit_delay: Duration,
    /// Most delegated tasks of this type running at once (besides `tasks.max_running`).
    #[serde(default)]
    pub max_tasks: Option<usize>,
    /// The CLI's hooks, through which it reports its turns, tool calls and prompts
    /// (`"claude"`, `"gemini"`, `"codex"`); without, activity is read from output and quiet
    /// time.
    #[serde(default)]
    pub hooks: Option<HookStyle>,
    /// For agents without hooks: what the screen shows when the agent waits for input or
    /// for a permission, checked once output has been quiet for `panes.screen_check_after`.
    /// The first rule whose pattern matches the screen's text wins.
    #[serde(default)]
    pub screen_rules: Vec<ScreenRule>,
    /// Where its sessions run: `"tmux"` (default) or `"pty"`.
    #[serde(default)]
    pub backend: Backend,
    /// What a delegated task's text is to it: `"prose"` (default), a prompt that gets the
    /// context files, requirements and the instruction to make the tests pass appended; or
    /// `"script"` (the built-in `shell`), run exactly as written, nothing appended.
    #[serde(default)]
    pub prompt: PromptStyle,
    /// Arguments that start the CLI again in its earlier conversation, placed right after
    /// the program of `command`; `{cli_session}` stands for the CLI's own session id (which
    /// its hooks report). Empty: an agent started again starts a fresh conversation.
    #[serde(default)]
    pub resume_args: Vec<String>,
    /// What happens to an agent of this type whose terminal was gone when the daemon
    /// started (after a reboot, or when its tmux server or pty holder was killed):
    /// `"manual"` (default: listed as `lost` until `POST /api/agents/{id}/resume`) or
    /// `"auto"` (started again at once).
    #[serde(default)]
    pub resume: ResumePolicy,
}

/// `resume`: when a lost agent is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumePolicy {
    /// Listed as `lost` until someone asks (`POST /api/agents/{id}/resume`).
    #[default]
    Manual,
    /// Started again when the daemon starts.
    Auto,
}

/// How a delegated task's text reaches an agent type's one-shot command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    /// A prompt for an agent that reads prose: the context is appended in words.
    #[default]
    Prose,
    /// A program (a shell script): the task text exactly, nothing appended.
    Script,
}

/// `[[agents.<type>.screen_rules]]`: a pattern on the agent's screen and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenRule {
    /// A name for the evidence, e.g. `permission dialog`.
    pub name: String,
    /// A regular expression (Rust `regex` syntax) over the screen's text, rows joined by
    /// newlines; `(?m)` makes `^` and `$` match at each row.
    pub pattern: String,
    /// `waiting_input`, `needs_approval` or `working`.
    pub activity: String,
}

impl ScreenRule {
    /// The activities a screen rule may report.
    pub const ACTIVITIES: [&'static str; 3] = ["waiting_input", "needs_approval", "working"];

    /// Checks the rule: its pattern compiles and its activity is one of [`Self::ACTIVITIES`].
    /// Fails naming the rule.
    pub fn check(&self) -> Result<(), String> {
        regex::Regex::new(&self.pattern).map_err(|e| format!("rule {:?}: {e}", self.name))?;
        if !Self::ACTIVITIES.contains(&self.activity.as_str()) {
            return Err(format!(
                "rule {:?}: activity must be waiting_input, needs_approval or working",
                self.name
            ));
        }
        Ok(())
    }
}

fn default_submit_delay() -> Duration {
    Duration::from_millis(150)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_hosts: Vec::new(),
            state_dir: default_state_dir(),
            workers: 8,
            kill_workers: 4,
            slow_workers: 8,
            max_queued_jobs: 64,
            state_lock_wait: Duration::from_secs(2),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            sessions: SessionPolicy::default(),
            tmux: TmuxConfig::default(),
            pty: PtyConfig::default(),
            websocket: WebSocketConfig::default(),
            panes: PaneConfig::default(),
            tasks: TasksConfig::default(),
            rate_limits: RateLimitConfig::default(),
            hooks: HooksConfig::default(),
            web: WebConfig::default(),
            metrics: MetricsConfig::default(),
            tools: ToolsConfig::default(),
            cluster: ClusterConfig::default(),
            agents: builtin_agents(),
        }
    }
}

/// A configuration that could not be loaded, with a message fit for the operator.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// `listen`: an IP address and port, or `localhost:PORT` (127.0.0.1), with a message that
/// says how to write it.
fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    if let Some(port) = text.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "listen = {text:?} is not an address: write an IP address and port, such as \
             \"127.0.0.1:8081\" (or \"localhost:8081\"; other names are not looked up)"
        ))
    })
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
}

impl Config {
    /// Loads `path` (or only the defaults when `None`), applies `overrides`, and validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", path.display()))
                })?;
                Config::from_toml(&text)
                    .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))?
            }
            None => Config::default(),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.state_dir {
            config.state_dir = dir.clone();
        }
        config.finish()?;
        Ok(config)
    }

    /// What a person should know about this config that is not an error: built-in agent
    /// types whose hooks were switched off (their activity, replies, remote approval and
    /// the daemon's MCP tools then come from the screen and quiet time alone).
    pub fn warnings(&self) -> Vec<String> {
        builtin_agents()
            .into_iter()
            .filter(|(name, builtin)| {
                builtin.hooks.is_some() && self.agents.get(name).is_some_and(|a| a.hooks.is_none())
            })
            .map(|(name, _)| {
                format!(
                    "agents.{name}: hooks are switched off (hooks = \"none\"): its activity comes \
                     from its screen and quiet time alone, with no replies, remote tool \
                     approval or MCP tools"
                )
            })
            .collect()
    }

    /// Parses a config file's text on top of the defaults, without validating paths.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // An address written without quotes fails as a number before any field sees it.
            let unquoted_listen = text.lines().any(|line| {
                let line = line.trim_start();
                line.strip_prefix("listen")
                    .map(str::trim_start)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::trim_start)
                    .is_some_and(|value| value.starts_with(|c: char| c.is_ascii_digit()))
            });
            let hint = if unquoted_listen {
                "\nhint: listen takes a quoted address, e.g. listen = \"127.0.0.1:8081\""
            } else {
                ""
            };
            ConfigError(format!("{e}{hint}"))
        })
    }

    /// Expands `~`, makes paths absolute and checks invariants the rest of the daemon relies on.
    fn finish(&mut self) -> Result<(), ConfigError> {
        self.state_dir = absolute(&expand_home(&self.state_dir))?;
        for root in &mut self.sessions.allowed_roots {
            *root = absolute(&expand_home(root))?;
        }
        self.check_capacities()?;
        self.check_history_and_hooks()?;
        for (name, agent) in &self.agents {
            validate_agent_type(name, agent)?;
        }
        self.finish_tasks()?;
        for key in &self.sessions.allowed_env {
            if !crate::environment::is_env_name(key) {
                return Err(ConfigError(format!(
                    "sessions.allowed_env: {key:?} is not a valid variable name"
                )));
            }
        }
        self.cluster.finish()?;
        if self.cluster.enabled() && self.auth.algorithm != TokenAlgorithm::HS256 {
            return Err(ConfigError(
                "[cluster] needs auth.algorithm = \"HS256\" with the same secret on every host \
                 (a daemon signs the short-lived tokens of requests it forwards)"
                    .into(),
            ));
        }
        if self.auth.algorithm != TokenAlgorithm::HS256 && self.auth.public_key_file.is_none() {
            return Err(ConfigError(format!(
                "auth.algorithm = {:?} needs auth.public_key_file",
                self.auth.algorithm
            )));
        }
        Ok(())
    }

    /// The invariants of the worker pools, terminal sizes, buffers and request limits.
    fn check_capacities(&self) -> Result<(), ConfigError> {
        if [
            self.workers,
            self.kill_workers,
            self.slow_workers,
            self.max_queued_jobs,
        ]
        .contains(&0)
        {
            return Err(ConfigError(
                "workers, kill_workers, slow_workers and max_queued_jobs must be at least 1".into(),
            ));
        }
        if self.tmux.width < 10 || self.tmux.height < 5 {
            return Err(ConfigError(
                "tmux.width must be >= 10 and tmux.height >= 5".into(),
            ));
        }
        if self.pty.ring_bytes < 4096 || self.pty.ring_bytes > crate::proto::pty::MAX_PAYLOAD {
            return Err(ConfigError(format!(
                "pty.ring_bytes must be between 4 KiB and {} MiB",
                crate::proto::pty::MAX_PAYLOAD >> 20
            )));
        }
        if self.pty.handover_timeout.is_zero() {
            return Err(ConfigError("pty.handover_timeout must be above 0".into()));
        }
        if self.web.max_login_codes_per_subject == 0
            || self.web.max_observe_login_codes >= self.web.max_login_codes
        {
            return Err(ConfigError(
                "web.max_login_codes_per_subject must be at least 1 and \
                 web.max_observe_login_codes below web.max_login_codes"
                    .into(),
            ));
        }
        if self.panes.backlog_bytes < 64 * 1024 {
            return Err(ConfigError(
                "panes.backlog_bytes must be at least 64 KiB".into(),
            ));
        }
        if self.panes.read_budget < MIN_READ_BUDGET {
            return Err(ConfigError(format!(
                "panes.read_budget must be at least {MIN_READ_BUDGET} (one read of a terminal)"
            )));
        }
        if self.websocket.max_message_bytes < 256 || self.websocket.send_window_bytes < 4096 {
            return Err(ConfigError(
                "websocket.max_message_bytes must be >= 256 and send_window_bytes >= 4096".into(),
            ));
        }
        if self.limits.max_uri_bytes + crate::proto::http::URI_SLACK > self.limits.max_head_bytes {
            return Err(ConfigError(format!(
                "limits.max_uri_bytes must be at least {} below limits.max_head_bytes",
                crate::proto::http::URI_SLACK
            )));
        }
        Ok(())
    }

    /// Makes the task paths absolute and checks the task settings.
    fn finish_tasks(&mut self) -> Result<(), ConfigError> {
        if let Some(dir) = &mut self.tasks.default_workspace {
            *dir = absolute(&expand_home(dir))?;
        }
        if let Some(file) = &mut self.tasks.store_file {
            *file = absolute(&expand_home(file))?;
        }
        let commands = std::mem::take(&mut self.tasks.test_commands);
        for (dir, argv) in commands {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(ConfigError(format!(
                    "tasks.test_commands: the command for {} must name a program",
                    dir.display()
                )));
            }
            self.tasks
                .test_commands
                .insert(absolute(&expand_home(&dir))?, argv);
        }
        if self.tasks.keep_finished == 0 {
            return Err(ConfigError("tasks.keep_finished must be at least 1".into()));
        }
        // Checked again and again while input waits: zero would spin the loop.
        if self.hooks.prompt_settle < Duration::from_millis(10)
            || self.hooks.submit_check < Duration::from_millis(100)
        {
            return Err(ConfigError(
                "hooks.prompt_settle must be at least 10ms and hooks.submit_check at least 100ms"
                    .into(),
            ));
        }
        if self.tasks.max_running == 0 {
            return Err(ConfigError("tasks.max_running must be at least 1".into()));
        }
        if self.tasks.default_timeout.is_zero()
            || self.tasks.default_timeout > self.tasks.max_timeout
        {
            return Err(ConfigError(
                "tasks.default_timeout must be above 0 and at most tasks.max_timeout".into(),
            ));
        }
        Ok(())
    }

    /// The invariants of the history bounds and the hook quotas.
    fn check_history_and_hooks(&self) -> Result<(), ConfigError> {
        let s = &self.sessions;
        if s.max_history_message_bytes < 1024
            || s.max_history_bytes < s.max_history_message_bytes
            || s.max_history_total_bytes < s.max_history_bytes
        {
            return Err(ConfigError(
                "sessions.max_history_message_bytes must be at least 1024, at most \
                 sessions.max_history_bytes, which must be at most \
                 sessions.max_history_total_bytes"
                    .into(),
            ));
        }
        // A message escaped as JSON takes at most six times its bytes, and a page always
        // holds at least one.
        if s.max_messages_page_bytes < 6 * s.max_history_message_bytes + 4096 {
            return Err(ConfigError(
                "sessions.max_messages_page_bytes must be at least 6 times \
                 sessions.max_history_message_bytes plus 4 KiB"
                    .into(),
            ));
        }
        let h = &self.hooks;
        if h.idle_timeout.is_zero()
            || h.answer_timeout.is_zero()
            || h.max_connections == 0
            || h.max_connections_per_session == 0
            || h.max_pending_approvals_per_session == 0
        {
            return Err(ConfigError(
                "hooks.idle_timeout, answer_timeout, max_connections, \
                 max_connections_per_session and max_pending_approvals_per_session must be \
                 above 0"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Path of the private tmux server's socket.
    pub fn tmux_socket(&self) -> PathBuf {
        self.state_dir.join("tmux.sock")
    }

    /// Path of the Unix socket agents' hooks (`orchestra hook`) report to.
    pub fn hook_socket(&self) -> PathBuf {
        self.state_dir.join("hook.sock")
    }

    /// The key that signs browser session cookies (generated on first start, mode 0600;
    /// deleting it ends every browser session).
    pub fn web_key_file(&self) -> PathBuf {
        self.state_dir.join("web_key")
    }

    /// File of browser sessions ended by logout before their expiry (`<sid> <exp>` lines).
    pub fn web_logouts_file(&self) -> PathBuf {
        self.state_dir.join("web_logouts")
    }

    /// Where the daemon keeps per-session agent settings (hook configuration).
    pub fn hooks_dir(&self) -> PathBuf {
        self.state_dir.join("hooks")
    }

    /// Path of the Unix socket on which pane capture helpers hand their pipes to the daemon.
    pub fn attach_socket(&self) -> PathBuf {
        self.state_dir.join("attach.sock")
    }

    /// The local API socket: the same HTTP and WebSocket API as the listen address, for
    /// processes of the daemon's own user only, with no token (the `orchestra` commands on
    /// this host use it).
    pub fn api_socket(&self) -> PathBuf {
        self.state_dir.join("api.sock")
    }

    /// Directory of the `pty` backend's holder sockets and session metadata.
    pub fn pty_dir(&self) -> PathBuf {
        self.state_dir.join("pty")
    }

    /// Directory of the agents' records: what starting each again after a reboot takes.
    pub fn agents_dir(&self) -> PathBuf {
        self.state_dir.join("agents")
    }

    /// Directory holding one-shot spawn specifications read by `orchestra agent-exec`.
    pub fn spawn_dir(&self) -> PathBuf {
        self.state_dir.join("spawn")
    }

    /// Path of the task ticket store.
    pub fn task_store(&self) -> PathBuf {
        self.tasks
            .store_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("tasks.redb"))
    }

    /// Directory holding the git worktrees of `isolation: "worktree"` tasks.
    pub fn worktree_dir(&self) -> PathBuf {
        self.state_dir.join("worktrees")
    }

    /// Default location of the generated HS256 secret.
    pub fn secret_file(&self) -> PathBuf {
        self.auth
            .jwt_secret_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("jwt_secret"))
    }
}

/// Agent type names become part of session ids and tmux session names, so they are kept to
/// characters that mean nothing to tmux targets or formats.
pub fn is_agent_type_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

fn validate_agent_type(name: &str, agent: &AgentType) -> Result<(), ConfigError> {
    if !is_agent_type_name(name) {
        return Err(ConfigError(format!(
            "agents.{name}: type names must be 1-32 characters of a-z, 0-9 and _, starting \
             with a letter"
        )));
    }
    if agent.command.is_empty() || agent.command[0].is_empty() {
        return Err(ConfigError(format!(
            "agents.{name}.command must name a program"
        )));
    }
    if let Some(headless) = &agent.headless
        && (headless.is_empty() || headless[0].is_empty())
    {
        return Err(ConfigError(format!(
            "agents.{name}.headless must name a program"
        )));
    }
    if let Some(e) = agent.screen_rules.iter().find_map(|r| r.check().err()) {
        return Err(ConfigError(format!("agents.{name}.screen_rules: {e}")));
    }
    for key in agent.env.keys() {
        if !crate::environment::is_env_name(key) {
            return Err(ConfigError(format!(
                "agents.{name}.env: {key:?} is not a valid name"
            )));
        }
    }
    Ok(())
}

/// The built-in agent types: the real CLIs' interactive and one-shot commands. In every
/// one-shot command the task text can never become an option, and, except for
/// `cursor-agent`, which takes its prompt only as an argument, never appears on a command
/// line (where every local user can read it): it reaches the CLI on its standard input
/// (`claude -p`, `codex exec`) or in a private file (`droid exec --file`,
/// `aider --message-file`, the `shell` type's script); `cursor-agent`'s follows `--`.
pub fn builtin_agents() -> BTreeMap<String, AgentType> {
    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| s.starts_with('/'))
        .unwrap_or_else(|| "/bin/sh".to_string());
    let mut agents = BTreeMap::new();
    let mut add = |name: &str, command: Vec<String>, headless: Vec<String>| {
        agents.insert(
            name.to_string(),
            AgentType {
                command,
                env: BTreeMap::new(),
                headless: Some(headless),
                submit_delay: default_submit_delay(),
                max_tasks: None,
                hooks: match name {
                    "claude" => Some(HookStyle::Claude),
                    "gemini" => Some(HookStyle::Gemini),
                    "codex" => Some(HookStyle::Codex),
                    _ => None,
                },
                screen_rules: Vec::new(),
                backend: Backend::Tmux,
                prompt: if name == "shell" {
                    PromptStyle::Script
                } else {
                    PromptStyle::Prose
                },
                // Claude Code and Gemini CLI take their conversation's id back with `--resume`,
                // Codex with its `resume` subcommand.
                resume_args: match name {
                    "claude" | "gemini" => vec!["--resume".into(), "{cli_session}".into()],
                    "codex" => vec!["resume".into(), "{cli_session}".into()],
                    _ => Vec::new(),
                },
                resume: ResumePolicy::Manual,
            },
        );
    };
    // Claude Code decides alone in its own default mode (`auto`): the daemon asks it for
    // `default`, in which it asks before acting (the pinned CLI's help calls it `manual`;
    // `default` is the older name, which older CLIs know too), so those questions reach
    // viewers as remote approvals. The daemon's own MCP tools are allowed in the hook settings.
    add(
        "claude",
        argv(&["claude", "--permission-mode", "default"]),
        argv(&[
            "claude",
            "-p",
            "--output-format",
            "json",
            "--permission-mode",
            "acceptEdits",
        ]),
    );
    // Gemini CLI: edits without asking in a one-shot task (its default mode offers a
    // one-shot run no tool that would ask), the prompt on stdin.
    add(
        "gemini",
        argv(&["gemini"]),
        argv(&["gemini", "--approval-mode", "auto_edit"]),
    );
    // Codex starts a shared background server by default, which outlives its sessions (a
    // killed session's turn runs on) and gives every session on one home the environment
    // of the first: each session runs its own instead.
    add(
        "codex",
        argv(&["codex", "--no-daemon"]),
        argv(&["codex", "exec", "--skip-git-repo-check"]),
    );
    add(
        "droid",
        argv(&["droid"]),
        argv(&[
            "droid",
            "exec",
            "--auto",
            "medium",
            "--output-format",
            "json",
            "--file",
            "{prompt_file}",
        ]),
    );
    add(
        "cursor",
        argv(&["cursor-agent"]),
        argv(&[
            "cursor-agent",
            "-p",
            "--force",
            "--output-format",
            "json",
            "--",
            "{prompt}",
        ]),
    );
    add(
        "aider",
        argv(&["aider"]),
        argv(&[
            "aider",
            "--yes-always",
            "--no-pretty",
            "--no-stream",
            "--message-file",
            "{prompt_file}",
        ]),
    );
    add(
        "shell",
        vec![shell.clone()],
        vec![shell, "--".into(), "{prompt_file}".into()],
    );
    // Codex reports SessionStart only with the first prompt: until then its screen tells
    // (read off the real TUI, 0.171); so do these rules for a type that turns its hooks off.
    if let Some(codex) = agents.get_mut("codex") {
        codex.screen_rules = codex_screen_rules();
    }
    agents
}

/// What Codex's screens say (read off the real TUI, 0.171): the built-in `codex` type's
/// screen rules, and any type's with `hooks = "codex"` that names none of its own.
pub fn codex_screen_rules() -> Vec<ScreenRule> {
    let rule = |name: &str, pattern: &str, activity: &str| ScreenRule {
        name: name.into(),
        pattern: pattern.into(),
        activity: activity.into(),
    };
    vec![
        // Hooks it does not trust yet stop it before its prompt; a person decides there
        // (typing into that screen could trust a project's hooks unreviewed).
        rule("hooks need review", "Hooks need review", "needs_approval"),
        rule("turn running", "esc to interrupt", "working"),
        // Its composer's placeholder, empty (the binary has these two).
        rule(
            "empty prompt",
            "(?m)^› (Ask Codex to do anything|Ask a follow-up question)",
            "waiting_input",
        ),
    ]
}

/// `[agents.<type>]` as written: every key optional. A table for a built-in type changes
/// only the keys it names (so `command` and `env` alone keep the type's hooks, MCP tools,
/// remote approval and headless form); a new type starts from the defaults and must name
/// its `command`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentTypeTable {
    command: Option<Vec<String>>,
    /// Merged key by key into the type's environment.
    env: Option<BTreeMap<String, String>>,
    /// `[]` takes a built-in type's headless form away.
    headless: Option<Vec<String>>,
    #[serde(default, deserialize_with = "optional_duration")]
    submit_delay: Option<Duration>,
    max_tasks: Option<usize>,
    hooks: Option<HooksSetting>,
    screen_rules: Option<Vec<ScreenRule>>,
    backend: Option<Backend>,
    prompt: Option<PromptStyle>,
    resume_args: Option<Vec<String>>,
    resume: Option<ResumePolicy>,
}

/// `hooks = "claude"`, or `"none"` to switch a built-in type's hooks off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HooksSetting {
    Claude,
    Gemini,
    Codex,
    None,
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration_text::deserialize(d).map(Some)
}

impl AgentTypeTable {
    /// This table on top of `base` (a built-in type), or on the defaults.
    fn merge(self, name: &str, base: Option<AgentType>) -> Result<AgentType, String> {
        let mut agent = match base {
            Some(base) => base,
            None => AgentType {
                command: self
                    .command
                    .clone()
                    .ok_or_else(|| format!("agents.{name}: a new agent type needs a command"))?,
                env: BTreeMap::new(),
                headless: None,
                submit_delay: default_submit_delay(),
                max_tasks: None,
                hooks: None,
                screen_rules: Vec::new(),
                backend: Backend::default(),
                prompt: PromptStyle::default(),
                resume_args: Vec::new(),
                resume: ResumePolicy::default(),
            },
        };
        if let Some(command) = self.command {
            agent.command = command;
        }
        if let Some(env) = self.env {
            agent.env.extend(env);
        }
        if let Some(headless) = self.headless {
            agent.headless = (!headless.is_empty()).then_some(headless);
        }
        if let Some(delay) = self.submit_delay {
            agent.submit_delay = delay;
        }
        if let Some(max) = self.max_tasks {
            agent.max_tasks = Some(max);
        }
        if let Some(hooks) = self.hooks {
            agent.hooks = match hooks {
                HooksSetting::Claude => Some(HookStyle::Claude),
                HooksSetting::Gemini => Some(HookStyle::Gemini),
                HooksSetting::Codex => Some(HookStyle::Codex),
                HooksSetting::None => None,
            };
        }
        if let Some(rules) = self.screen_rules {
            agent.screen_rules = rules;
        }
        if agent.hooks == Some(HookStyle::Codex) && agent.screen_rules.is_empty() {
            // Its screen says when it has started (it reports SessionStart late).
            agent.screen_rules = codex_screen_rules();
        }
        if let Some(backend) = self.backend {
            agent.backend = backend;
        }
        if let Some(prompt) = self.prompt {
            agent.prompt = prompt;
        }
        if let Some(args) = self.resume_args {
            agent.resume_args = args;
        }
        if let Some(resume) = self.resume {
            agent.resume = resume;
        }
        Ok(agent)
    }
}

fn deserialize_agents<'de, D>(deserializer: D) -> Result<BTreeMap<String, AgentType>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let tables = BTreeMap::<String, AgentTypeTable>::deserialize(deserializer)?;
    let mut agents = builtin_agents();
    for (name, table) in tables {
        let base = agents.remove(&name);
        let agent = table.merge(&name, base).map_err(serde::de::Error::custom)?;
        agents.insert(name, agent);
    }
    Ok(agents)
}

/// The default state directory: `$XDG_STATE_HOME/orchestra` or `~/.local/state/orchestra`.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("orchestra"),
        None => PathBuf::from("~/.local/state/orchestra"),
    }
}

/// The default config file, `$XDG_CONFIG_HOME/orchestra/config.toml` or
/// `~/.config/orchestra/config.toml`, when it exists.
pub fn default_config_file() -> Option<PathBuf> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home_dir()?.join(".config"),
    };
    let path = dir.join("orchestra").join("config.toml");
    path.is_file().then_some(path)
}

/// The home directory of the user running the daemon (`$HOME`).
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn expand_home(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => match home_dir() {
            Some(home) => home.join(rest),
            None => path.to_path_buf(),
        },
        Err(_) => path.to_path_buf(),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path)
        .map_err(|e| ConfigError(format!("cannot make {} absolute: {e}", path.display())))
}

/// Serde adapter for durations written as text (`"30s"`, `"1h 5m"`, `"250ms"`).
pub mod duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Parses a humantime duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        /// A duration as written: text, or anything else (a number without a unit).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Other(serde::de::IgnoredAny),
        }
        let text = match Written::deserialize(d)? {
            Written::Text(text) => text,
            Written::Other(_) => {
                return Err(serde::de::Error::custom(
                    "a duration is a quoted number with a unit, such as \"10s\", \"5m\" or \"2h\"",
                ));
            }
        };
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (write it like \"10s\", \"5m\" or \"2h\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_mistakes_get_errors_that_say_how_to_write_it() {
        let unquoted = Config::from_toml("listen = 127.0.0.1:8081").unwrap_err().0;
        assert!(
            unquoted.contains("listen = \"127.0.0.1:8081\""),
            "{unquoted}"
        );
        let name = Config::from_toml("listen = \"devbox:8081\"").unwrap_err().0;
        assert!(name.contains("IP address and port"), "{name}");
        let local = Config::from_toml("listen = \"localhost:8081\"").unwrap();
        assert_eq!(local.listen, "127.0.0.1:8081".parse().unwrap());
        let number = Config::from_toml("[sessions]\nidle_after = 10")
            .unwrap_err()
            .0;
        assert!(number.contains("\"10s\""), "{number}");
        let unit = Config::from_toml("[sessions]\nidle_after = \"10 parsecs\"")
            .unwrap_err()
            .0;
        assert!(unit.contains("\"10s\""), "{unit}");
        let budget = Config::from_toml("[panes]\nread_budget = 0")
            .unwrap()
            .check_capacities()
            .unwrap_err()
            .0;
        assert!(
            budget.contains("read_budget must be at least 4096"),
            "{budget}"
        );
    }

    #[test]
    fn the_sample_config_in_contrib_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/config.toml");
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(config.sessions.max_sessions, 16);
        assert!(config.agents.contains_key("claude") && config.agents.contains_key("shell"));
    }

    #[test]
    fn agents_tools_wait_for_a_person_unless_allowed() {
        let config = Config::default();
        assert_eq!(config.tools.delegate_task, ToolPolicy::Approve);
        assert_eq!(config.tools.send_message, ToolPolicy::Approve);
        let config = Config::from_toml("[tools]\ndelegate_task = \"allow\"\n").unwrap();
        assert_eq!(config.tools.delegate_task, ToolPolicy::Allow);
        assert_eq!(config.tools.send_message, ToolPolicy::Approve);
        for bad in [
            "[tools]\nsend_message = \"yes\"\n",
            "[tools]\nrun = \"allow\"\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_include_the_builtin_agents() {
        let config = Config::default();
        for name in ["claude", "codex", "droid", "cursor", "aider", "shell"] {
            assert!(config.agents.contains_key(name), "{name} missing");
        }
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        // Every built-in screen rule is valid.
        for (name, agent) in &config.agents {
            assert!(
                agent.screen_rules.iter().all(|r| r.check().is_ok()),
                "{name}"
            );
        }
        assert!(!config.agents["codex"].screen_rules.is_empty());
    }

    #[test]
    fn no_builtin_one_shot_command_lets_task_text_become_an_option() {
        for (name, agent) in builtin_agents() {
            let headless = agent.headless.unwrap();
            let prompt_at = headless.iter().position(|a| a == "{prompt}");
            match prompt_at {
                Some(at) => assert!(
                    headless[..at].contains(&"--".to_string()),
                    "{name}: {{prompt}} must follow --: {headless:?}"
                ),
                // The prompt goes in a file, named or as standard input.
                None => assert!(
                    headless
                        .iter()
                        .all(|a| !a.contains('{') || a == "{prompt_file}"),
                    "{name}: {headless:?}"
                ),
            }
        }
    }

    #[test]
    fn file_adds_and_overrides_agent_types() {
        let config = Config::from_toml(
            r#"
            listen = "127.0.0.1:9000"
            [sessions]
            idle_after = "2s"
            [agents.echo]
            command = ["/bin/cat"]
            env = { A = "1" }
            headless = ["/bin/echo", "{prompt}"]
            [agents.claude]
            command = ["/opt/claude"]
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.sessions.idle_after, Duration::from_secs(2));
        assert_eq!(config.agents["echo"].command, vec!["/bin/cat"]);
        assert_eq!(config.agents["echo"].env["A"], "1");
        assert_eq!(config.agents["claude"].command, vec!["/opt/claude"]);
        assert!(config.agents.contains_key("droid"));
    }

    #[test]
    fn a_table_for_a_built_in_type_changes_only_the_keys_it_names() {
        let builtin = builtin_agents().remove("claude").unwrap();
        let config =
            Config::from_toml("[agents.claude]\ncommand = [\"/opt/claude\"]\nenv = { A = \"1\" }")
                .unwrap();
        let claude = &config.agents["claude"];
        assert_eq!(claude.command, vec!["/opt/claude"]);
        assert_eq!(claude.env["A"], "1");
        assert_eq!(claude.hooks, Some(HookStyle::Claude), "the hooks stay");
        assert_eq!(claude.headless, builtin.headless, "the headless form stays");
        assert!(config.warnings().is_empty());
        // Taking something away is said out loud, and the daemon warns about lost hooks.
        let config = Config::from_toml("[agents.claude]\nhooks = \"none\"\nheadless = []").unwrap();
        assert_eq!(config.agents["claude"].hooks, None);
        assert_eq!(config.agents["claude"].headless, None);
        assert_eq!(config.agents["claude"].command, builtin.command);
        let warnings = config.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("agents.claude: hooks are switched off"),
            "{warnings:?}"
        );
        // A new type needs its command; unknown keys are still errors.
        let error = Config::from_toml("[agents.mine]\nenv = { A = \"1\" }").unwrap_err();
        assert!(
            error
                .0
                .contains("agents.mine: a new agent type needs a command"),
            "{}",
            error.0
        );
        assert!(Config::from_toml("[agents.claude]\nhook = \"claude\"").is_err());
    }

    #[test]
    fn a_type_with_codex_hooks_reads_its_start_off_codex_screens() {
        let config = Config::from_toml(
            "[agents.mycodex]\ncommand = [\"/opt/codex\"]\nhooks = \"codex\"\n\
             [agents.otherscreens]\ncommand = [\"/opt/codex\"]\nhooks = \"codex\"\n\
             [[agents.otherscreens.screen_rules]]\nname = \"mine\"\npattern = \"> $\"\n\
             activity = \"waiting_input\"\n",
        )
        .unwrap();
        assert_eq!(config.agents["mycodex"].hooks, Some(HookStyle::Codex));
        assert_eq!(
            config.agents["mycodex"].screen_rules,
            config.agents["codex"].screen_rules
        );
        assert_eq!(config.agents["otherscreens"].screen_rules.len(), 1);
        assert_eq!(
            config.agents["codex"].screen_rules[0].name,
            "hooks need review"
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors() {
        assert!(Config::from_toml("lisen = \"x\"").is_err());
        assert!(Config::from_toml("[limits]\nhead_timeout = \"soon\"").is_err());
        let mut config = Config::from_toml("[agents.Bad]\ncommand = [\"x\"]").unwrap();
        assert!(config.finish().is_err());
        // A headless command without a placeholder reads its prompt on standard input.
        let mut config =
            Config::from_toml("[agents.x]\ncommand = [\"x\"]\nheadless = [\"x\"]").unwrap();
        assert!(config.finish().is_ok());
    }

    #[test]
    fn agent_type_names() {
        assert!(is_agent_type_name("claude"));
        assert!(is_agent_type_name("my_agent2"));
        for bad in [
            "",
            "Claude",
            "a-b",
            "a:b",
            "a.b",
            "a#b",
            "9a",
            &"a".repeat(33),
        ] {
            assert!(!is_agent_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let auth = AuthConfig {
            jwt_secret: Some("hunter2".into()),
            ..AuthConfig::default()
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
