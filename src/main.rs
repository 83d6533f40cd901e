//! The `orchestra` command: `serve`, `token`, and the helpers run on the daemon's behalf
//! (`agent-exec` and `pipe-attach` by tmux, `hook` by an agent CLI).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use orchestra::api::auth::{Scope, load_or_create_secret, mint_token};
use orchestra::cli::{Failure, exit};
use orchestra::config::{Config, Overrides, default_config_file};

/// The version with the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ORCHESTRA_GIT_REVISION"),
    ")"
);

/// Run AI coding agents in tmux and drive and watch them over HTTP and WebSocket.
///
/// `orchestra serve` runs the daemon. The other commands talk to a running daemon: the local
/// one by default (through its socket in the state dir, with no token), or any other with
/// --url and --token (or ORCHESTRA_URL and ORCHESTRA_TOKEN); the token is sent only after
/// that daemon proved it can verify it.
///
/// Exit codes: 0 ok, 1 refused or failed, 2 usage, 3 no such session or task, 4 token
/// refused, 5 daemon unreachable; `tasks wait` and `delegate --wait`: 0 completed, 6 failed,
/// 7 timed out, 8 cancelled.
#[derive(Parser)]
#[command(name = "orchestra", version = VERSION, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from.
#[derive(clap::Args, Clone)]
struct ConfigArgs {
    /// Config file (default: ~/.config/orchestra/config.toml if it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory (secret, tmux socket); overrides the config file.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on; overrides the config file (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
    },
    /// Print a JWT signed with the daemon's secret.
    Token {
        #[command(flatten)]
        config: ConfigArgs,
        /// Scope to grant: `observe` (read) or `control` (read and act).
        #[arg(long, default_value = "control")]
        scope: String,
        /// Lifetime, e.g. `15m`, `1h`, `7d` (short by default: whoever holds a token can
        /// act until it expires).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Subject (who the token is for).
        #[arg(long, default_value = "cli")]
        sub: String,
    },
    /// Print a one-time link that logs a browser into the dashboard.
    ///
    /// On the daemon's host it asks the daemon through its socket (no token); elsewhere
    /// pass --url and --token. The link works once, for web.login_code_ttl.
    /// Example: `orchestra open --scope observe` for a read-only browser.
    Open {
        #[command(flatten)]
        config: ConfigArgs,
        /// Scope of the browser session: `observe` (read) or `control` (read and act).
        #[arg(long, default_value = "control")]
        scope: String,
        /// A daemon reached over TCP (needs --token; default: the local daemon's socket).
        #[arg(long, value_name = "URL", env = "ORCHESTRA_URL")]
        url: Option<String>,
        /// Token to ask with, sent only after the daemon proved it can verify it.
        #[arg(
            long,
            value_name = "JWT",
            env = "ORCHESTRA_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
        /// Send --token without the server proof (daemons with public-key tokens).
        #[arg(long)]
        trust_url: bool,
    },
    /// List, show, start and stop agents.
    ///
    /// Examples:
    ///   orchestra agents
    ///   orchestra agents spawn claude --name primary --working-dir ~/projects/app
    ///   orchestra agents show sess-claude-primary
    ///   orchestra agents kill sess-claude-primary
    #[command(verbatim_doc_comment)]
    Agents {
        #[command(flatten)]
        target: orchestra::cli::Target,
        #[command(subcommand)]
        command: Option<orchestra::cli::commands::AgentsCommand>,
    },
    /// A cluster's hosts: whether each is reachable, its load and its agents.
    ///
    /// Example: orchestra cluster status
    Cluster {
        #[command(flatten)]
        target: orchestra::cli::Target,
        #[command(subcommand)]
        command: Option<orchestra::cli::commands::ClusterCommand>,
    },
    /// Type a message into an agent (a `user_message`), optionally waiting for its reply.
    ///
    /// Example: orchestra send sess-claude-primary "run the tests" --wait
    Send {
        #[command(flatten)]
        target: orchestra::cli::Target,
        /// Session id.
        session: String,
        /// The message (typed as one paste, then Enter).
        text: String,
        /// Wait for the reply the agent's turn ends with and print it (agents with hooks), at
        /// most 10 minutes, or as long as `--wait=DURATION` says (e.g. `--wait=30s`).
        #[arg(
            long,
            value_name = "DURATION",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "10m",
            value_parser = humantime::parse_duration
        )]
        wait: Option<Duration>,
    },
    /// An agent's terminal in yours, live, over the API (works from other machines).
    ///
    /// Keys go to the agent; resizing your window resizes its pane. Detach with Ctrl-]
    /// (--detach-key). After a network drop it reconnects and resumes without losing or
    /// repeating output.
    ///
    /// Example: orchestra attach sess-claude-primary --url http://devbox:8080
    Attach {
        #[command(flatten)]
        target: orchestra::cli::Target,
        #[command(flatten)]
        args: orchestra::cli::attach::AttachArgs,
    },
    /// Hand a task to a new headless agent; prints its task id (or waits for it).
    ///
    /// Examples:
    ///   orchestra delegate claude "add a --verbose flag" --worktree --test-command "cargo test"
    ///   orchestra delegate codex "fix the flaky test" --context-file tests/it.rs --wait
    #[command(verbatim_doc_comment)]
    Delegate {
        #[command(flatten)]
        target: orchestra::cli::Target,
        #[command(flatten)]
        args: orchestra::cli::commands::DelegateArgs,
    },
    /// List, show, cancel and wait for delegated tasks.
    ///
    /// Examples:
    ///   orchestra tasks
    ///   orchestra tasks show 12
    ///   orchestra tasks wait 12 && echo done
    #[command(verbatim_doc_comment)]
    Tasks {
        #[command(flatten)]
        target: orchestra::cli::Target,
        #[command(subcommand)]
        command: Option<orchestra::cli::commands::TasksCommand>,
    },
    /// Print a shell completion script: `orchestra completions bash > ~/.local/share/bash-completion/completions/orchestra`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// (internal) First program of an agent pane: reads a spawn spec and execs the agent.
    #[command(hide = true)]
    AgentExec { spec: PathBuf },
    /// (internal) Run by tmux pipe-pane: hands the pane's pipe to the daemon, with the token
    /// it reads from a private file (never from its command line).
    #[command(hide = true)]
    PipeAttach {
        socket: PathBuf,
        token_file: PathBuf,
    },
    /// (internal) Holds an agent's pseudo-terminal and process for the `pty` backend.
    #[command(hide = true)]
    PtyHold {
        /// The Unix socket the daemon connects to.
        #[arg(long)]
        socket: PathBuf,
        /// Initial rows.
        #[arg(long)]
        rows: u16,
        /// Initial columns.
        #[arg(long)]
        cols: u16,
        /// Most output kept while no daemon is attached.
        #[arg(long)]
        ring_bytes: usize,
        /// Where the holder writes its errors.
        #[arg(long)]
        log: Option<PathBuf>,
        /// The file with the key a daemon must prove it holds.
        #[arg(long)]
        key: PathBuf,
        /// Run the holder itself (otherwise: start it detached and wait until it is ready).
        #[arg(long)]
        serve: bool,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// (internal) Run by an agent CLI's hook: forwards the event to the daemon.
    #[command(hide = true)]
    Hook { event: String },
    /// (internal) The MCP server (stdio) an agent CLI runs: the daemon's tools for agents.
    #[command(hide = true)]
    Mcp,
}

fn load_config(args: &ConfigArgs, listen: Option<SocketAddr>) -> Result<Config, String> {
    let path = args.config.clone().or_else(default_config_file);
    let overrides = Overrides {
        listen,
        state_dir: args.state_dir.clone(),
    };
    Config::load(path.as_deref(), &overrides).map_err(|e| e.to_string())
}

/// Moves `ORCHESTRA_JWT_SECRET` into the config (where it takes precedence, as it did in the
/// environment) and erases the daemon's own variables from its environment, so that no
/// agent, tmux server or other child can ever inherit them. Runs before any thread starts.
fn take_secret_from_environment(mut config: Config) -> Result<Config, String> {
    if let Some(secret) = std::env::var_os(orchestra::config::SECRET_ENV).filter(|s| !s.is_empty())
    {
        let secret = secret
            .into_string()
            .map_err(|_| format!("{} is not valid UTF-8", orchestra::config::SECRET_ENV))?;
        config.auth.jwt_secret = Some(secret);
    }
    let removed = orchestra::environment::scrub_own()?;
    if !removed.is_empty() {
        let names: Vec<_> = removed.iter().map(|n| n.to_string_lossy()).collect();
        log::debug!(
            "removed from the environment children inherit: {}",
            names.join(", ")
        );
    }
    Ok(config)
}

/// `orchestra open`: a login link from the running daemon, or why not with its exit code
/// (usage, refused, daemon unreachable).
fn open_link(
    args: &ConfigArgs,
    scope: &str,
    url: Option<String>,
    token: Option<String>,
    trust_url: bool,
) -> Result<String, Failure> {
    use orchestra::client::{error_line, request};
    let scope = match scope {
        "observe" => Scope::Observe,
        "control" => Scope::Control,
        other => {
            return Err(Failure::new(
                exit::USAGE,
                format!("unknown scope {other:?}; use observe or control"),
            ));
        }
    };
    // The same rules as every other command: the local socket without a token, TCP with
    // one (sent once the server proved it can verify it).
    let target = orchestra::cli::Target {
        url,
        token,
        config: args.config.clone(),
        state_dir: args.state_dir.clone(),
        json: false,
        trust_url,
    };
    let api = target.resolve()?;
    let body = serde_json::json!({ "scope": scope.as_str() }).to_string();
    let answer = request(
        &api.endpoint,
        "POST",
        "/api/login-codes",
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )
    .map_err(orchestra::cli::connect_failure)?;
    if answer.status != 201 {
        return Err(Failure::new(exit::AUTH, error_line(&answer)));
    }
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("url")?.as_str().map(str::to_string))
        .ok_or_else(|| Failure::new(exit::UNREACHABLE, "the daemon's answer has no url"))
}

/// Runs a command that talks to a daemon: resolves where it is and who we are, then prints
/// a failure as `orchestra: CODE: message` with its exit code.
fn client(
    target: &orchestra::cli::Target,
    run: impl FnOnce(&orchestra::cli::Api) -> Result<u8, orchestra::cli::Failure>,
) -> ExitCode {
    match target.resolve().and_then(|api| run(&api)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("orchestra: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::AgentExec { spec } => ExitCode::from(orchestra::agents::exec::run(&spec) as u8),
        Command::Mcp => ExitCode::from(orchestra::agents::mcp::run() as u8),
        Command::Hook { event } => {
            ExitCode::from(orchestra::agents::hook_client::run(&event) as u8)
        }
        Command::PtyHold {
            socket,
            rows,
            cols,
            ring_bytes,
            log,
            key,
            serve,
            command,
        } => {
            let options = orchestra::pty::holder::HoldOptions {
                socket,
                rows,
                cols,
                ring_bytes,
                log,
                key,
                command,
            };
            hold_pty(&options, serve)
        }
        Command::PipeAttach { socket, token_file } => {
            ExitCode::from(orchestra::panes::attach::run_helper(&socket, &token_file) as u8)
        }
        Command::Token {
            config,
            scope,
            ttl,
            sub,
        } => print_token(&config, &scope, ttl, &sub),
        Command::Agents { target, command } => client(&target, |api| {
            orchestra::cli::commands::agents(api, command).map(|()| 0)
        }),
        Command::Cluster { target, command } => client(&target, |api| {
            orchestra::cli::commands::cluster(api, command).map(|()| 0)
        }),
        Command::Send {
            target,
            session,
            text,
            wait,
        } => client(&target, |api| {
            orchestra::cli::commands::send(api, &session, &text, wait).map(|()| 0)
        }),
        Command::Attach { target, args } => client(&target, |api| {
            let why = orchestra::cli::attach::run(api, &args)?;
            eprintln!("[orchestra: {why}]");
            Ok(0)
        }),
        Command::Delegate { target, args } => {
            client(&target, |api| orchestra::cli::commands::delegate(api, args))
        }
        Command::Tasks { target, command } => {
            client(&target, |api| orchestra::cli::commands::tasks(api, command))
        }
        Command::Completions { shell } => print_completions(shell),
        Command::Open {
            config,
            scope,
            url,
            token,
            trust_url,
        } => match open_link(&config, &scope, url, token, trust_url) {
            Ok(link) => {
                println!("{link}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("orchestra: {}", failure.message);
                ExitCode::from(failure.code)
            }
        },
        Command::Serve { config, listen } => serve(&config, listen),
    }
}

/// `orchestra pty-hold`: runs the holder itself (`serve`), or starts it detached and waits
/// until it is ready.
fn hold_pty(options: &orchestra::pty::holder::HoldOptions, serve: bool) -> ExitCode {
    let code = if serve {
        orchestra::pty::holder::serve(options)
    } else {
        orchestra::pty::holder::launch(options)
    };
    ExitCode::from(code as u8)
}

/// `orchestra token`: prints a JWT signed with the daemon's secret (created if missing).
fn print_token(config: &ConfigArgs, scope: &str, ttl: Duration, sub: &str) -> ExitCode {
    let scope = match scope {
        "observe" => Scope::Observe,
        "control" => Scope::Control,
        other => {
            eprintln!("orchestra: unknown scope {other:?}; use observe or control");
            return ExitCode::from(exit::USAGE);
        }
    };
    let result = load_config(config, None).and_then(|config| {
        orchestra::create_private_dir(&config.state_dir)?;
        let secret = load_or_create_secret(&config)?;
        mint_token(&config, &secret, sub, scope, ttl)
    });
    match result {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orchestra: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `orchestra completions`: prints the completion script for `shell`.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "orchestra",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

/// `orchestra serve`: starts the daemon and runs its event loop until it shuts down.
fn serve(config: &ConfigArgs, listen: Option<SocketAddr>) -> ExitCode {
    // Before any thread or file: nothing the daemon creates is open to other users,
    // whatever umask it was started with (its children get that umask back).
    orchestra::sys::make_created_files_private();
    orchestra::logging::init();
    let mut server = match load_config(config, listen)
        .and_then(take_secret_from_environment)
        .inspect(|config| {
            for warning in config.warnings() {
                log::warn!("{warning}");
            }
        })
        .and_then(orchestra::server::Server::start)
    {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "orchestra {} listening on http://{}",
        env!("CARGO_PKG_VERSION"),
        server.local_addr()
    );
    // A person at a terminal gets a way into the dashboard at once; a service
    // manager's log never holds a login link.
    if std::io::IsTerminal::is_terminal(&std::io::stderr())
        && let Some(link) = server.login_link()
    {
        eprintln!("dashboard login (works once): {link}");
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
