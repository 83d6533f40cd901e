//! A scripted model server for the real Claude Code CLI: it speaks the part of the Messages
//! API the CLI uses (`POST /v1/messages`, streamed as server-sent events) on a loopback
//! port, and answers each turn of the agent's loop with the next scripted reply.
//!
//! Requests with tools are the agent's own turns and take the script's replies in order;
//! requests without tools (side requests such as titles) get a short fixed text, so they
//! never shift the script. Every request is recorded for the test to inspect.
//!
//! It also speaks the streamed Responses API (`POST /v1/responses`) that the OpenAI Codex
//! CLI uses: text replies, and tool calls as `function_call` items; Codex's own title request
//! gets the fixed side text. Codex 0.171 declares no top-level `tools` (they travel in an
//! `additional_tools` input item), so there every request but the title's takes the script.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// One block of a scripted reply.
#[derive(Debug, Clone)]
pub enum Block {
    /// Text the model says.
    Text(String),
    /// A tool call, such as Claude's `Bash` with `{"command": "..."}` or Codex's
    /// `exec_command` with `{"cmd": "..."}`. An MCP tool is `mcp__SERVER__TOOL` for both.
    ToolUse {
        /// The tool.
        name: String,
        /// Its input.
        input: Value,
    },
}

/// One scripted model reply: its blocks, ending the turn unless one of them uses a tool.
#[derive(Debug, Clone)]
pub struct Reply(pub Vec<Block>);

impl Reply {
    /// A reply that only says `text`.
    pub fn text(text: &str) -> Reply {
        Reply(vec![Block::Text(text.to_string())])
    }

    /// A reply that calls `tool` with `input`.
    pub fn tool(name: &str, input: Value) -> Reply {
        Reply(vec![Block::ToolUse {
            name: name.to_string(),
            input,
        }])
    }

    /// A Codex reply that runs `cmd` with its `exec_command` tool. Given a `justification`,
    /// the call asks to run outside the sandbox, and Codex's TUI (under its default
    /// `on-request` approvals) puts that question to the user: "Would you like to run the
    /// following command?", `y` to run it, `esc` or `n` to cancel it and end the turn.
    /// Without one, a command that writes only in the workspace or `/tmp` runs at once.
    #[allow(dead_code)]
    pub fn codex_command(cmd: &str, justification: Option<&str>) -> Reply {
        let mut input = json!({"cmd": cmd});
        if let Some(question) = justification {
            input["sandbox_permissions"] = json!("require_escalated");
            input["justification"] = json!(question);
        }
        Reply::tool("exec_command", input)
    }
}

#[derive(Default)]
struct Script {
    replies: std::collections::VecDeque<Reply>,
    requests: Vec<Value>,
    served: usize,
}

/// The server; it stops accepting when dropped.
pub struct ScriptedModel {
    /// `http://127.0.0.1:PORT`, for `ANTHROPIC_BASE_URL`.
    pub url: String,
    script: Arc<Mutex<Script>>,
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// A real CLI talks to this model: a heavy test, and one that runs alone.
    _turn: (crate::common::HeavyTurn, crate::common::AloneTurn),
}

impl ScriptedModel {
    /// Starts a server that will answer with `replies`, in order.
    pub fn start(replies: Vec<Reply>) -> ScriptedModel {
        let turn = (crate::common::heavy_turn(), crate::common::alone_turn());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into(),
            ..Script::default()
        }));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (script.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        ScriptedModel {
            url: format!("http://127.0.0.1:{port}"),
            script,
            port,
            stop,
            _turn: turn,
        }
    }

    /// Adds replies to the end of the script.
    #[allow(dead_code)]
    pub fn push(&self, reply: Reply) {
        self.script.lock().unwrap().replies.push_back(reply);
    }

    /// The agent turns' requests so far (Claude's: those with tools; Codex's: all but its
    /// title request), oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.script.lock().unwrap().requests.clone()
    }

    /// How many scripted replies have been served.
    pub fn served(&self) -> usize {
        self.script.lock().unwrap().served
    }

    /// The environment that points the CLI at this server, offline.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ANTHROPIC_BASE_URL", self.url.clone()),
            ("ANTHROPIC_API_KEY", API_KEY.to_string()),
            ("DISABLE_TELEMETRY", "1".to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
        ]
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The API key the scripted CLI uses (approved in its `.claude.json`).
pub const API_KEY: &str = "sk-ant-scripted-test-key";

/// Writes the CLI's `$HOME/.claude.json` so that its TUI starts straight at the prompt in
/// `dirs`: onboarding done, the key approved, the folders trusted.
pub fn claude_home(home: &std::path::Path, dirs: &[&std::path::Path]) {
    std::fs::create_dir_all(home).unwrap();
    let projects: serde_json::Map<String, Value> = dirs
        .iter()
        .map(|d| {
            (
                d.display().to_string(),
                json!({"hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true}),
            )
        })
        .collect();
    let config = json!({
        "hasCompletedOnboarding": true,
        // The CLI remembers approved keys by their last 20 characters.
        "customApiKeyResponses": {"approved": [&API_KEY[API_KEY.len() - 20..], API_KEY], "rejected": []},
        "projects": projects,
    });
    std::fs::write(home.join(".claude.json"), config.to_string()).unwrap();
}

/// The pinned Claude Code CLI, installed into the target directory by
/// `tests/tools/install-claude.sh` when it is not there yet. Fails when it cannot be had:
/// the tests that need it never pass without it.
pub fn claude_cli() -> String {
    install_cli("claude-code", "install-claude.sh")
}

/// The pinned OpenAI Codex CLI, installed by `tests/tools/install-codex.sh`, likewise.
pub fn codex_cli() -> String {
    install_cli("codex", "install-codex.sh")
}

/// A TOML array for an agent type's config: `argv` (a built-in type's `command` or
/// `headless`) with the installed `cli` in place of its program, then `extra` arguments.
pub fn toml_argv(cli: &str, argv: &[String], extra: &[&str]) -> String {
    let quoted = |text: &str| toml::Value::String(text.to_string()).to_string();
    let items: Vec<String> = std::iter::once(cli)
        .chain(argv[1..].iter().map(String::as_str))
        .chain(extra.iter().copied())
        .map(quoted)
        .collect();
    format!("[{}]", items.join(", "))
}

/// Runs `tests/tools/SCRIPT` to install a CLI under `CARGO_TARGET_TMPDIR/DIR` (once, however
/// many tests ask at the same time) and returns the program's path.
pub fn install_cli(dir: &str, script: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Tests run in parallel: one installs, the others wait for it.
    let lock = std::fs::File::create(dir.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    let script = format!("{}/tests/tools/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(&script)
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} could not install the CLI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn serve(stream: TcpStream, script: &Mutex<Script>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if path.starts_with("/v1/responses") {
            let side = request["input"]
                .to_string()
                .contains("Generate a concise, single-line task title");
            let reply = if side {
                Reply::text("Scripted side answer")
            } else {
                let mut script = script.lock().unwrap();
                script.requests.push(request.clone());
                let next = script.replies.pop_front();
                if next.is_some() {
                    script.served += 1;
                }
                next.unwrap_or_else(|| Reply::text("(the script has no more replies)"))
            };
            let _ = stream_response(&mut writer, &reply);
            return; // Connection: close
        }
        if !path.starts_with("/v1/messages") || path.contains("count_tokens") {
            let body = json!({"input_tokens": 10}).to_string();
            let _ = write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            continue;
        }
        let agent_turn = request["tools"].as_array().is_some_and(|t| !t.is_empty());
        let reply = if agent_turn {
            let mut script = script.lock().unwrap();
            script.requests.push(request.clone());
            let next = script.replies.pop_front();
            if next.is_some() {
                script.served += 1;
            }
            next.unwrap_or_else(|| Reply::text("(the script has no more replies)"))
        } else {
            Reply::text("Scripted side answer")
        };
        let model = request["model"]
            .as_str()
            .unwrap_or("claude-scripted")
            .to_string();
        if request["stream"] == true {
            let _ = stream_reply(&mut writer, &model, &reply);
            return; // Connection: close
        }
        let body = message(&model, &reply).to_string();
        let _ = write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

/// A reply in the Responses API's streamed form: its text as one assistant message (left out
/// when the reply only calls tools), then each tool call as a `function_call` item. A tool
/// named `mcp__SERVER__TOOL` goes out as `TOOL` in the namespace `mcp__SERVER`, the form in
/// which Codex routes a call to that MCP server (the flat name is "unsupported call").
fn stream_response(out: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )?;
    let text: String = reply
        .0
        .iter()
        .filter_map(|b| match b {
            Block::Text(text) => Some(text.as_str()),
            Block::ToolUse { .. } => None,
        })
        .collect();
    let calls: Vec<(&str, &Value)> = reply
        .0
        .iter()
        .filter_map(|b| match b {
            Block::Text(_) => None,
            Block::ToolUse { name, input } => Some((name.as_str(), input)),
        })
        .collect();
    let mut event = |name: &str, mut data: Value| -> std::io::Result<()> {
        data["type"] = json!(name);
        write!(out, "event: {name}\ndata: {data}\n\n")?;
        out.flush()
    };
    let id = format!("resp_{}", uuid());
    let response = json!({"id": id, "object": "response", "created_at": 0, "status": "in_progress", "model": "scripted", "output": []});
    event("response.created", json!({"response": response}))?;
    let mut output = Vec::new();
    if !text.is_empty() || calls.is_empty() {
        let item = json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []});
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        )?;
        event(
            "response.content_part.added",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        )?;
        event(
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text}),
        )?;
        let done = json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]});
        event(
            "response.output_item.done",
            json!({"output_index": 0, "item": done}),
        )?;
        output.push(done);
    }
    for (name, input) in calls {
        let index = output.len();
        let item_id = format!("fc_{index}_{}", uuid());
        let arguments = input.to_string();
        let mut item = json!({"type": "function_call", "id": item_id, "call_id": format!("call_{index}_{}", uuid()), "name": name, "arguments": "", "status": "in_progress"});
        if let Some((server, tool)) = name
            .strip_prefix("mcp__")
            .and_then(|rest| rest.split_once("__"))
        {
            item["namespace"] = json!(format!("mcp__{server}"));
            item["name"] = json!(tool);
        }
        event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        )?;
        event(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": index, "delta": arguments}),
        )?;
        event(
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": index, "arguments": arguments}),
        )?;
        item["arguments"] = json!(arguments);
        item["status"] = json!("completed");
        event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        )?;
        output.push(item);
    }
    let mut completed = response;
    completed["status"] = json!("completed");
    completed["output"] = Value::Array(output);
    completed["usage"] = json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10});
    event("response.completed", json!({"response": completed}))
}

/// Writes Codex's `$HOME/.codex/config.toml`: the scripted server as its model provider
/// (`OPENAI_BASE_URL` alone is not enough), the API key's variable, `dirs` trusted. It turns
/// off the app-server daemon the TUI otherwise starts: a copy of the CLI (some 400 MB, under
/// `~/.codex/packages`) and its updater, both outliving the TUI, the daemon going on with a
/// running turn.
pub fn codex_home(home: &std::path::Path, model_url: &str, dirs: &[&std::path::Path]) {
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    let mut config = format!(
        "model_provider = \"scripted\"\n\
         [model_providers.scripted]\nname = \"scripted\"\nbase_url = \"{model_url}/v1\"\n\
         env_key = \"OPENAI_API_KEY\"\nwire_api = \"responses\"\n\
         [features]\ndaemon_auto_start = false\n"
    );
    for dir in dirs {
        config.push_str(&format!(
            "[projects.\"{}\"]\ntrust_level = \"trusted\"\n",
            dir.display()
        ));
    }
    std::fs::write(home.join(".codex/config.toml"), config).unwrap();
}

fn stop_reason(reply: &Reply) -> &'static str {
    if reply.0.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn content(reply: &Reply) -> Vec<Value> {
    reply
        .0
        .iter()
        .enumerate()
        .map(|(i, block)| match block {
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": format!("toolu_{i}_{}", uuid()), "name": name, "input": input})
            }
        })
        .collect()
}

fn uuid() -> String {
    format!("{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

fn message(model: &str, reply: &Reply) -> Value {
    json!({
        "id": format!("msg_{}", uuid()), "type": "message", "role": "assistant", "model": model,
        "content": content(reply), "stop_reason": stop_reason(reply), "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 5},
    })
}

fn stream_reply(out: &mut TcpStream, model: &str, reply: &Reply) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )?;
    let mut event = |name: &str, data: Value| -> std::io::Result<()> {
        write!(out, "event: {name}\ndata: {data}\n\n")?;
        out.flush()
    };
    let mut start = message(model, reply);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    event(
        "message_start",
        json!({"type": "message_start", "message": start}),
    )?;
    for (index, block) in content(reply).into_iter().enumerate() {
        match block["type"].as_str() {
            Some("text") => {
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                )?;
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": block["text"]}}),
                )?;
            }
            _ => {
                let mut start = block.clone();
                start["input"] = json!({});
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": start}),
                )?;
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}),
                )?;
            }
        }
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )?;
    }
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null}, "usage": {"output_tokens": 5}}),
    )?;
    event("message_stop", json!({"type": "message_stop"}))
}
