//! The hook socket's message: what `orchestra hook EVENT` sends the daemon when an agent CLI
//! (Claude Code) runs one of its hooks. Pure: bytes in, a request or an error out.
//!
//! One JSON object per connection, ended by the client closing its side:
//! `{"token": "<the session's hook credential>", "event": "Stop", "payload": {...}}`, where
//! `payload` is what the CLI wrote to the hook's standard input. The daemon answers with one
//! JSON object and closes: `{}`, or for `PermissionRequest` the user's decision in the
//! CLI's hook output format (see [`permission_answer`]).

use serde::Deserialize;

/// The hook events the daemon understands (Claude Code's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HookEvent {
    /// The CLI started (or resumed) a session and shows its prompt.
    SessionStart,
    /// The user's prompt was submitted: the agent has received it and starts a turn.
    UserPromptSubmit,
    /// A tool is about to run.
    PreToolUse,
    /// A tool has run.
    PostToolUse,
    /// The CLI is about to ask the user's permission for a tool; the hook may answer it.
    PermissionRequest,
    /// The CLI notifies the user: it needs permission for a tool, or waits for input.
    Notification,
    /// The agent's turn ended; the payload holds its last message.
    Stop,
    /// The CLI's session ends.
    SessionEnd,
}

impl HookEvent {
    /// Every event, in the order the CLI's settings list them.
    pub const ALL: [HookEvent; 8] = [
        HookEvent::SessionStart,
        HookEvent::UserPromptSubmit,
        HookEvent::PreToolUse,
        HookEvent::PostToolUse,
        HookEvent::PermissionRequest,
        HookEvent::Notification,
        HookEvent::Stop,
        HookEvent::SessionEnd,
    ];

    /// The CLI's name of the event.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::SessionStart => "SessionStart",
            HookEvent::UserPromptSubmit => "UserPromptSubmit",
            HookEvent::PreToolUse => "PreToolUse",
            HookEvent::PostToolUse => "PostToolUse",
            HookEvent::PermissionRequest => "PermissionRequest",
            HookEvent::Notification => "Notification",
            HookEvent::Stop => "Stop",
            HookEvent::SessionEnd => "SessionEnd",
        }
    }

    /// Parses the CLI's name of an event.
    pub fn parse(name: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// Whether the event concerns a tool (its hook entry takes a matcher).
    pub fn is_tool_event(self) -> bool {
        matches!(
            self,
            HookEvent::PreToolUse | HookEvent::PostToolUse | HookEvent::PermissionRequest
        )
    }
}

/// One decoded hook message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRequest {
    /// The session's hook credential.
    pub token: String,
    /// Which hook ran.
    pub event: HookEvent,
    /// What the CLI gave the hook (`null` if it was not JSON).
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// A call of one of the daemon's tools by an agent (`orchestra mcp`, the agent's MCP
/// server), made in the name of the session whose credential it carries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The session's hook credential.
    pub token: String,
    /// The tool, e.g. `delegate_task`.
    pub call: String,
    /// Its arguments.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// Anything the hook socket accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketMessage {
    /// A hook event.
    Hook(HookRequest),
    /// A tool call.
    Call(CallRequest),
}

/// Decodes a complete hook event or tool call of at most `max` bytes.
pub fn decode_message(bytes: &[u8], max: usize) -> Result<SocketMessage, HookError> {
    if bytes.len() > max {
        return Err(HookError::TooLarge(max));
    }
    let is_call = serde_json::from_slice::<serde_json::Value>(bytes)
        .map(|v| v.get("call").is_some())
        .unwrap_or(false);
    if !is_call {
        return decode(bytes, max).map(SocketMessage::Hook);
    }
    let call: CallRequest = serde_json::from_slice(bytes).map_err(|e| {
        let why: String = e.to_string().chars().take(200).collect();
        HookError::Malformed(why)
    })?;
    if call.token.is_empty() || call.token.len() > 128 || call.call.len() > 64 {
        return Err(HookError::Malformed("bad token or tool name".into()));
    }
    Ok(SocketMessage::Call(call))
}

/// Why a hook message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// Longer than the configured maximum.
    TooLarge(usize),
    /// Not the message described above.
    Malformed(String),
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookError::TooLarge(max) => write!(f, "hook message longer than {max} bytes"),
            HookError::Malformed(why) => write!(f, "malformed hook message: {why}"),
        }
    }
}

/// Decodes a complete message of at most `max` bytes.
pub fn decode(bytes: &[u8], max: usize) -> Result<HookRequest, HookError> {
    if bytes.len() > max {
        return Err(HookError::TooLarge(max));
    }
    let request: HookRequest = serde_json::from_slice(bytes).map_err(|e| {
        let why: String = e.to_string().chars().take(200).collect();
        HookError::Malformed(why)
    })?;
    if request.token.is_empty() || request.token.len() > 128 {
        return Err(HookError::Malformed("bad token".into()));
    }
    Ok(request)
}

/// The answer to a `PermissionRequest` hook that carries the user's decision, in Claude
/// Code's hook output format.
pub fn permission_answer(allow: bool, message: Option<&str>) -> Vec<u8> {
    let mut decision = serde_json::json!({"behavior": if allow { "allow" } else { "deny" }});
    if let Some(message) = message.filter(|_| !allow) {
        decision["message"] = message.into();
    }
    let mut bytes = serde_json::to_vec(&serde_json::json!({
        "hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}
    }))
    .expect("serializable");
    bytes.push(b'\n');
    bytes
}

/// Encodes a message (the client's side). `payload` must be JSON (or `null`). The
/// credential comes first, so the daemon knows the session before the rest arrives
/// ([`credential_prefix`]).
pub fn encode(token: &str, event: HookEvent, payload: &serde_json::Value) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        token: &'a str,
        event: &'a str,
        payload: &'a serde_json::Value,
    }
    serde_json::to_vec(&Message {
        token,
        event: event.as_str(),
        payload,
    })
    .expect("serializable")
}

/// Encodes a tool call (the client's side), credential first like [`encode`].
pub fn encode_call(token: &str, call: &str, arguments: &serde_json::Value) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        token: &'a str,
        call: &'a str,
        arguments: &'a serde_json::Value,
    }
    serde_json::to_vec(&Message {
        token,
        call,
        arguments,
    })
    .expect("serializable")
}

/// What the first bytes of a message say about its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefix<'a> {
    /// The message starts `{"token":"<credential>"`: the credential.
    Credential(&'a str),
    /// Too few bytes yet to tell.
    Incomplete,
    /// The message does not start with its credential (known only once it is complete).
    Other,
}

/// Reads the credential off the start of a message as [`encode`] writes it, before the
/// message is complete. Credentials are 1 to 128 characters of `[A-Za-z0-9_-]`.
pub fn credential_prefix(bytes: &[u8]) -> Prefix<'_> {
    const HEAD: &[u8] = br#"{"token":""#;
    let start = bytes.len().min(HEAD.len());
    if bytes[..start] != HEAD[..start] {
        return Prefix::Other;
    }
    if bytes.len() <= HEAD.len() {
        return Prefix::Incomplete;
    }
    let rest = &bytes[HEAD.len()..];
    let is_token_byte = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
    match rest.iter().position(|b| !is_token_byte(b)) {
        Some(end) if (1..=128).contains(&end) && rest[end] == b'"' => {
            Prefix::Credential(std::str::from_utf8(&rest[..end]).expect("ASCII"))
        }
        Some(_) => Prefix::Other,
        None if rest.len() > 128 => Prefix::Other,
        None => Prefix::Incomplete,
    }
}

/// The daemon's refusal of a message or connection, as a tool call's error answer
/// (`{"ok": false, "error": ...}`); the hook client passes nothing of it to the CLI.
pub fn refusal(why: &str) -> Vec<u8> {
    let mut bytes =
        serde_json::to_vec(&serde_json::json!({"ok": false, "error": why})).expect("serializable");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let payload =
            serde_json::json!({"last_assistant_message": "done", "stop_hook_active": false});
        let bytes = encode("abc", HookEvent::Stop, &payload);
        let request = decode(&bytes, 1024).unwrap();
        assert_eq!(request.event, HookEvent::Stop);
        assert_eq!(request.token, "abc");
        assert_eq!(request.payload, payload);
        assert_eq!(decode(&bytes, 10), Err(HookError::TooLarge(10)));
        for bad in [
            &b"not json"[..],
            br#"{"token": "abc", "event": "Unheard"}"#,
            br#"{"token": "", "event": "Stop"}"#,
            br#"{"event": "Stop"}"#,
            br#"{"token": "abc", "event": "Stop", "extra": 1}"#,
            b"",
        ] {
            assert!(
                matches!(decode(bad, 1024), Err(HookError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for event in HookEvent::ALL {
            assert_eq!(HookEvent::parse(event.as_str()), Some(event));
        }
        let call = br#"{"token": "abc", "call": "list_agents", "arguments": {}}"#;
        assert!(
            matches!(decode_message(call, 1024), Ok(SocketMessage::Call(c)) if c.call == "list_agents")
        );
        assert!(matches!(
            decode_message(&bytes, 1024),
            Ok(SocketMessage::Hook(_))
        ));
        assert!(decode_message(br#"{"token": "abc", "call": "x", "bogus": 1}"#, 1024).is_err());
    }

    #[test]
    fn the_credential_is_read_off_the_start_of_a_message() {
        let message = encode("a1B2-c_3", HookEvent::Stop, &serde_json::json!({"x": 1}));
        assert_eq!(credential_prefix(&message), Prefix::Credential("a1B2-c_3"));
        let call = encode_call("abc", "list_agents", &serde_json::json!({}));
        assert_eq!(credential_prefix(&call), Prefix::Credential("abc"));
        assert!(
            matches!(decode_message(&call, 1024), Ok(SocketMessage::Call(c)) if c.token == "abc")
        );
        for n in 0..message.len().min(19) {
            assert_eq!(credential_prefix(&message[..n]), Prefix::Incomplete, "{n}");
        }
        for other in [
            &br#"{"event":"Stop","token":"abc"}"#[..],
            br#" {"token":"abc"}"#,
            br#"{"token":""}"#,
            br#"{"token":"a\u0062c"}"#,
            b"garbage",
        ] {
            assert_eq!(credential_prefix(other), Prefix::Other);
        }
        let long = format!(r#"{{"token":"{}"#, "a".repeat(129));
        assert_eq!(credential_prefix(long.as_bytes()), Prefix::Other);
        let answer: serde_json::Value = serde_json::from_slice(&refusal("no")).unwrap();
        assert_eq!(answer, serde_json::json!({"ok": false, "error": "no"}));
    }
}
