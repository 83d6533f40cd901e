//! How the client commands show answers: aligned tables for people (status colours only on
//! a terminal, and never with `NO_COLOR`), JSON for scripts.

use std::io::IsTerminal;

use serde_json::Value;

/// Whether to colour statuses: stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn colours() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// `status` in its colour (green running/completed, yellow idle/pending/proposed, red
/// failures), or as it is.
pub fn status(text: &str, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match text {
        "running" | "completed" | "working" => "32",
        "idle" | "pending" | "proposed" | "starting" | "waiting_input" | "needs_approval" => "33",
        "error" | "failed" | "timeout" | "exited" | "terminated" | "cancelled" | "stuck" => "31",
        _ => return text.to_string(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Lays out rows under a header, columns padded to their widest cell (escape sequences
/// for colour do not count).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let visible = |cell: &str| strip_colour(cell).chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(visible(cell));
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(visible(cell)) + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for row in rows {
        line(row.clone(), &mut out);
    }
    out
}

fn strip_colour(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as one table cell: strings bare, null as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Prints a JSON value for scripts (pretty, one document).
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// `key: value` lines for an object's fields, nested objects flattened with dots.
pub fn fields(value: &Value) -> String {
    let mut out = String::new();
    flatten("", value, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, inner, out);
            }
        }
        Value::String(text) if text.contains('\n') => {
            out.push_str(&format!("{prefix}:\n"));
            for line in text.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        other => out.push_str(&format!("{prefix}: {}\n", cell(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_on_visible_width() {
        let rows = vec![
            vec!["sess-a".to_string(), status("running", true)],
            vec!["sess-longer".to_string(), status("idle", false)],
        ];
        let text = table(&["SESSION", "STATUS"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "SESSION      STATUS");
        assert_eq!(lines[1], "sess-a       \x1b[32mrunning\x1b[0m");
        assert_eq!(lines[2], "sess-longer  idle");
    }

    #[test]
    fn fields_flatten_objects() {
        let text = fields(&json!({"a": 1, "b": {"c": null, "d": "x\ny"}}));
        assert_eq!(text, "a: 1\nb.c: -\nb.d:\n  x\n  y\n");
    }
}
