//! `orchestra mcp`: the MCP server (stdio, JSON-RPC 2.0, one message per line) that agent
//! types with hooks get through `--mcp-config`. It offers the daemon's tools (see
//! `crate::calls`) and forwards each call over the hook socket with the session's
//! credential from its environment, so a call can do only what that session may.

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use super::hook_client::{SOCKET_ENV, TOKEN_ENV, exchange};

/// How long a tool call may wait for the daemon (storing a plan's tasks takes a moment).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request line read from the CLI.
const MAX_LINE_BYTES: usize = 4 << 20;

/// The tools, as `tools/list` describes them.
pub fn tools() -> Value {
    let task_fields = json!({
        "agent_type": {"type": "string", "description": "Agent type to run the task, e.g. claude or droid"},
        "task": {"type": "string", "description": "What the agent should do"},
        "context": {"type": "object", "description": "{files: [...], requirements: [...], tests_required: bool}"},
        "working_dir": {"type": "string", "description": "Directory (default: yours)"},
        "isolation": {"type": "string", "enum": ["none", "worktree"]},
        "test_command": {"type": "array", "items": {"type": "string"}},
        "timeout_ms": {"type": "integer"}
    });
    json!([
        {
            "name": "list_agents",
            "description": "List the agent sessions of this Orchestra daemon with their status and activity.",
            "inputSchema": {"type": "object", "properties": {}}
        },
        {
            "name": "get_task",
            "description": "Get a delegated task's status and result.",
            "inputSchema": {"type": "object", "properties": {"task_id": {"type": "integer"}}, "required": ["task_id"]}
        },
        {
            "name": "delegate_task",
            "description": "Delegate a task to another agent. Unless the daemon's config allows it to start at once, it is proposed to the user like a plan and runs only once approved. You are told its result when it ends.",
            "inputSchema": {"type": "object", "properties": task_fields, "required": ["agent_type", "task"]}
        },
        {
            "name": "send_message",
            "description": "Type a message into another agent session. Unless the daemon's config allows it at once, it is held until the user allows it.",
            "inputSchema": {"type": "object", "properties": {"session_id": {"type": "string"}, "content": {"type": "string"}}, "required": ["session_id", "content"]}
        },
        {
            "name": "propose_plan",
            "description": "Propose tasks for the user to approve. They run only once approved; you are told each result when it ends.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "summary": {"type": "string", "description": "The plan in a sentence, shown to the user"},
                    "tasks": {"type": "array", "items": {"type": "object", "properties": task_fields, "required": ["agent_type", "task"]}}
                },
                "required": ["tasks"]
            }
        }
    ])
}

/// Serves MCP on standard input and output until the CLI closes it. Returns the exit code.
pub fn run() -> i32 {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut reader = stdin.lock();
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        let Ok(request) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if let Some(response) = answer(&request) {
            let mut bytes = response.to_string().into_bytes();
            bytes.push(b'\n');
            if stdout
                .write_all(&bytes)
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return 0;
            }
        }
    }
}

/// The response to one JSON-RPC message; `None` for notifications.
pub fn answer(request: &Value) -> Option<Value> {
    let id = request.get("id")?.clone();
    let params = &request["params"];
    let result = match request["method"].as_str().unwrap_or("") {
        "initialize" => Ok(json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "orchestra", "version": env!("CARGO_PKG_VERSION")},
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools()})),
        "tools/call" => {
            let name = params["name"].as_str().unwrap_or("");
            let arguments = params.get("arguments").cloned().unwrap_or(json!({}));
            let (text, is_error) = match call(name, &arguments) {
                Ok(result) => (result.to_string(), false),
                Err(error) => (error, true),
            };
            Ok(json!({"content": [{"type": "text", "text": text}], "isError": is_error}))
        }
        other => Err(json!({"code": -32601, "message": format!("no method {other}")})),
    };
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    })
}

/// Forwards a tool call to the daemon; its result, or why it failed.
fn call(tool: &str, arguments: &Value) -> Result<Value, String> {
    let socket = std::env::var_os(SOCKET_ENV).ok_or("not started by the Orchestra daemon")?;
    let token = std::env::var(TOKEN_ENV).map_err(|_| "not started by the Orchestra daemon")?;
    let message = crate::proto::hook::encode_call(&token, tool, arguments);
    let answer = exchange(
        &socket,
        &message,
        CALL_TIMEOUT,
        CALL_TIMEOUT,
        MAX_LINE_BYTES as u64,
    )
    .map_err(|e| format!("the Orchestra daemon is not reachable or did not answer: {e}"))?;
    let answer: Value =
        serde_json::from_slice(&answer).map_err(|_| "a bad answer from the Orchestra daemon")?;
    if answer["ok"] == true {
        Ok(answer["result"].clone())
    } else {
        Err(answer["error"].as_str().unwrap_or("failed").to_string())
    }
}

/// The `--mcp-config` for a session: this program's `mcp` server, named `orchestra` (its
/// tools reach the agent as `mcp__orchestra__<tool>`).
pub fn mcp_config(exe: &std::path::Path) -> Value {
    json!({"mcpServers": {"orchestra": {"type": "stdio", "command": exe, "args": ["mcp"]}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_speaks_the_mcp_handshake_and_lists_its_tools() {
        let init = answer(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}})).unwrap();
        assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
        assert_eq!(init["id"], 1);
        assert!(
            answer(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).is_none()
        );
        let list = answer(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).unwrap();
        let names: Vec<&str> = list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "list_agents",
                "get_task",
                "delegate_task",
                "send_message",
                "propose_plan"
            ]
        );
        let unknown = answer(&json!({"jsonrpc": "2.0", "id": 3, "method": "nope"})).unwrap();
        assert_eq!(unknown["error"]["code"], -32601);
    }
}
