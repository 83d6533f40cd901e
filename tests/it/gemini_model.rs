//! A scripted Gemini API server for the real Gemini CLI (`@google/gemini-cli`, pinned by
//! `tests/tools/install-gemini.sh`): it speaks the part of the Gemini API the CLI uses on a
//! loopback port, and answers each turn of the agent's loop with the next scripted reply.
//!
//! The CLI reaches it through `GOOGLE_GEMINI_BASE_URL` with API-key auth (see
//! [`GeminiModel::env`] and [`gemini_home`]). It calls
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` for the agent's own turns
//! (server-sent events, each `data: <GenerateContentResponse JSON>` and a blank line; no
//! `event:` lines, which its parser does not take), and
//! `POST /v1beta/models/{model}:generateContent` for side requests: with the default model
//! (`auto`) a router asks a small model (`responseMimeType: application/json` and a
//! `responseJsonSchema` with `complexity_score`) before each prompt; next-speaker and loop
//! checks and summaries are side requests of the same kind.
//!
//! A streamed request whose `tools` declare functions, and that asks for no JSON, is an agent
//! turn and takes the script's next reply; every other generate request is a side request
//! and gets a harmless answer (JSON that fits its schema, enums their first value, or a short
//! fixed text), so it never shifts the script. `:countTokens` gets a small count. Every
//! request is recorded for the test to inspect.

// Not every test uses every helper.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// One part of a scripted reply.
#[derive(Debug, Clone)]
pub enum Part {
    /// Text the model says.
    Text(String),
    /// A function call, such as `run_shell_command` with `{"command": "..."}`.
    Call {
        /// The tool (an MCP tool is `mcp_<server>_<tool>`).
        name: String,
        /// Its arguments.
        args: Value,
    },
}

/// One scripted model reply: its parts, ending the turn unless one of them calls a tool (the
/// CLI then runs the tool and asks again with its result). It must not be empty: the CLI
/// retries an empty answer.
#[derive(Debug, Clone)]
pub struct Reply(pub Vec<Part>);

impl Reply {
    /// A reply that only says `text`.
    pub fn text(text: &str) -> Reply {
        Reply(vec![Part::Text(text.to_string())])
    }

    /// A reply that calls `tool` with `args`.
    pub fn tool(name: &str, args: Value) -> Reply {
        Reply(vec![Part::Call {
            name: name.to_string(),
            args,
        }])
    }
}

/// What a request was to the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An agent turn: it took the script's next reply.
    Turn,
    /// A side request (router, next-speaker or loop check, summary...): a harmless answer.
    Side,
    /// Anything else (`:countTokens`, an unknown path).
    Other,
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST`, `GET`...
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// What it was to the script.
    pub kind: Kind,
    /// Its JSON body (`null` when it had none).
    pub body: Value,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    requests: Vec<Value>,
    seen: Vec<Seen>,
    served: usize,
}

/// The server; it stops accepting when dropped.
pub struct GeminiModel {
    /// `http://127.0.0.1:PORT`, for `GOOGLE_GEMINI_BASE_URL`.
    pub url: String,
    script: Arc<Mutex<Script>>,
    port: u16,
    stop: Arc<AtomicBool>,
    /// A real CLI talks to this model: a heavy test, and one that runs alone (so a test does
    /// not start this and [`crate::model::ScriptedModel`] both: each takes the turns).
    _turn: (crate::common::HeavyTurn, crate::common::AloneTurn),
}

impl GeminiModel {
    /// Starts a server that will answer the agent's turns with `replies`, in order.
    pub fn start(replies: Vec<Reply>) -> GeminiModel {
        let turn = (crate::common::heavy_turn(), crate::common::alone_turn());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into(),
            ..Script::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (script.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        GeminiModel {
            url: format!("http://127.0.0.1:{port}"),
            script,
            port,
            stop,
            _turn: turn,
        }
    }

    /// Adds a reply to the end of the script.
    pub fn push(&self, reply: Reply) {
        self.script.lock().unwrap().replies.push_back(reply);
    }

    /// The agent turns' requests so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.script.lock().unwrap().requests.clone()
    }

    /// Every request so far, side requests included, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    /// How many scripted replies have been served.
    pub fn served(&self) -> usize {
        self.script.lock().unwrap().served
    }

    /// The environment that points the CLI at this server with API-key auth, offline, the
    /// working folder trusted whatever it is. With a `$HOME` from [`gemini_home`] the TUI
    /// starts straight at its prompt.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GOOGLE_GEMINI_BASE_URL", self.url.clone()),
            ("GEMINI_API_KEY", API_KEY.to_string()),
            ("GEMINI_CLI_TRUST_WORKSPACE", "true".to_string()),
        ]
    }
}

impl Drop for GeminiModel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The API key the scripted CLI sends (as `x-goog-api-key`).
pub const API_KEY: &str = "gemini-scripted-test-key";

/// What a side request that wants no JSON is told.
pub const SIDE_TEXT: &str = "Scripted side answer";

/// What an agent turn is told once the script has run out.
pub const NO_MORE: &str = "(the script has no more replies)";

/// The user settings a test's CLI runs with: API-key auth chosen (without it the TUI opens
/// its auth dialog, whatever the environment says), no usage statistics or telemetry (the
/// statistics look up hosts), no update check. Tests may add `hooks` or `mcpServers`.
pub fn base_settings() -> Value {
    json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
    })
}

/// Writes the CLI's `$HOME/.gemini/settings.json` ([`base_settings`]) and
/// `trustedFolders.json` (`dirs` trusted), so that its TUI starts straight at the prompt.
pub fn gemini_home(home: &Path, dirs: &[&Path]) {
    gemini_home_with(home, dirs, base_settings());
}

/// [`gemini_home`] with these settings instead of the base ones.
pub fn gemini_home_with(home: &Path, dirs: &[&Path], settings: Value) {
    let dir = home.join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
    let trusted: Map<String, Value> = dirs
        .iter()
        .map(|d| (d.display().to_string(), json!("TRUST_FOLDER")))
        .collect();
    std::fs::write(
        dir.join("trustedFolders.json"),
        Value::Object(trusted).to_string(),
    )
    .unwrap();
}

/// The pinned Gemini CLI, installed into the target directory by
/// `tests/tools/install-gemini.sh` when it is not there yet. Fails when it cannot be had.
pub fn gemini_cli() -> String {
    crate::model::install_cli("gemini", "install-gemini.sh")
}

/// The text of the last user content of a turn's request: the prompt (the first turn's also
/// carries the CLI's `<session_context>`), or empty when it ends with a function response.
pub fn user_text(request: &Value) -> String {
    let Some(contents) = request["contents"].as_array() else {
        return String::new();
    };
    let Some(last) = contents.iter().rev().find(|c| c["role"] == "user") else {
        return String::new();
    };
    last["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The function responses a turn's request carries (the results of the tools the last reply
/// called), as `{"name", "response"}` objects; a denied call's `response` has an `error`.
pub fn function_responses(request: &Value) -> Vec<Value> {
    let Some(contents) = request["contents"].as_array() else {
        return Vec::new();
    };
    let Some(last) = contents.last() else {
        return Vec::new();
    };
    last["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p["functionResponse"].is_object())
                .map(|p| p["functionResponse"].clone())
                .collect()
        })
        .unwrap_or_default()
}

fn serve(stream: TcpStream, script: &Mutex<Script>) {
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut writer = stream;
    // The CLI keeps its connections alive: answer requests until it closes.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let body = if chunked {
            read_chunked(&mut reader)
        } else {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).ok().map(|_| body)
        };
        let Some(body) = body else { return };
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, content_type, payload) = answer(&method, &path, request, script);
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(payload.as_bytes()).is_err()
            || writer.flush().is_err()
        {
            return;
        }
    }
}

/// A request body sent in chunks.
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).ok()? == 0 {
            return None;
        }
        let size = size.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).ok()? == 0 || line.trim_end().is_empty() {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = String::new();
        reader.read_line(&mut crlf).ok()?;
    }
}

/// The status, content type and body that answer one request.
fn answer(
    method: &str,
    path: &str,
    request: Value,
    script: &Mutex<Script>,
) -> (u16, &'static str, String) {
    let route = path.split('?').next().unwrap_or("");
    let streamed = route.ends_with(":streamGenerateContent");
    let generate = streamed || route.ends_with(":generateContent");
    let kind = if !generate {
        Kind::Other
    } else if streamed && is_turn(&request) {
        Kind::Turn
    } else {
        Kind::Side
    };
    let reply = {
        let mut script = script.lock().unwrap();
        script.seen.push(Seen {
            method: method.to_string(),
            path: path.to_string(),
            kind,
            body: request.clone(),
        });
        match kind {
            Kind::Turn => {
                script.requests.push(request.clone());
                let next = script.replies.pop_front();
                if next.is_some() {
                    script.served += 1;
                }
                Some(next.unwrap_or_else(|| Reply::text(NO_MORE)))
            }
            Kind::Side => Some(side_reply(&request)),
            Kind::Other => None,
        }
    };
    let Some(reply) = reply else {
        if route.ends_with(":countTokens") {
            return (
                200,
                "application/json",
                json!({"totalTokens": 10}).to_string(),
            );
        }
        let error = json!({"error": {"code": 404, "message": format!("the scripted Gemini server has no {route}"), "status": "NOT_FOUND"}});
        return (404, "application/json", error.to_string());
    };
    // `/v1beta/models/gemini-x:streamGenerateContent` answers as `gemini-x`.
    let model = route
        .rsplit('/')
        .next()
        .and_then(|last| last.split(':').next())
        .unwrap_or("gemini-scripted");
    let body = response(&reply, model);
    if !streamed {
        (200, "application/json", body.to_string())
    } else if path.contains("alt=sse") {
        (200, "text/event-stream", format!("data: {body}\n\n"))
    } else {
        // A stream asked for without `alt=sse` is a JSON array of responses.
        (200, "application/json", json!([body]).to_string())
    }
}

/// Whether a streamed request is one of the agent's own turns: it declares functions, and
/// does not ask for JSON.
fn is_turn(request: &Value) -> bool {
    let declares = request["tools"].as_array().is_some_and(|tools| {
        tools.iter().any(|tool| {
            tool["functionDeclarations"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        })
    });
    declares && !wants_json(request)
}

fn wants_json(request: &Value) -> bool {
    let config = &request["generationConfig"];
    config["responseMimeType"] == "application/json"
        || config["responseJsonSchema"].is_object()
        || config["responseSchema"].is_object()
}

/// A side request's harmless answer: JSON that fits its schema (so a next-speaker check
/// hands the turn back to the user, the router picks its first model and no loop is seen),
/// else a short text.
fn side_reply(request: &Value) -> Reply {
    let config = &request["generationConfig"];
    let schema = if config["responseJsonSchema"].is_object() {
        &config["responseJsonSchema"]
    } else {
        &config["responseSchema"]
    };
    if wants_json(request) {
        Reply::text(&harmless(schema).to_string())
    } else {
        Reply::text(SIDE_TEXT)
    }
}

/// The plainest value that fits `schema`: an enum's first value, the smallest number (1 for
/// an integer, as the router's complexity score must be at least 1; 0 for a number, as a
/// loop check's confidence), an object of such values.
fn harmless(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|values| values.first()) {
        return first.clone();
    }
    let kind = schema["type"]
        .as_str()
        .or_else(|| schema["type"][0].as_str())
        .unwrap_or("object")
        .to_ascii_lowercase();
    match kind.as_str() {
        "object" => {
            let fields: Map<String, Value> = schema["properties"]
                .as_object()
                .map(|properties| {
                    properties
                        .iter()
                        .map(|(name, property)| (name.clone(), harmless(property)))
                        .collect()
                })
                .unwrap_or_default();
            Value::Object(fields)
        }
        "array" => json!([]),
        "string" => json!("scripted"),
        "boolean" => json!(false),
        "integer" => json!(schema["minimum"].as_i64().unwrap_or(1)),
        "number" => json!(schema["minimum"].as_f64().unwrap_or(0.0)),
        _ => Value::Null,
    }
}

/// A `GenerateContentResponse` carrying `reply`.
fn response(reply: &Reply, model: &str) -> Value {
    let parts: Vec<Value> = reply
        .0
        .iter()
        .map(|part| match part {
            Part::Text(text) => json!({"text": text}),
            Part::Call { name, args } => json!({"functionCall": {"name": name, "args": args}}),
        })
        .collect();
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 5, "totalTokenCount": 10},
        "modelVersion": model,
    })
}
