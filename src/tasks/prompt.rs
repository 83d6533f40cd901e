//! Pure text work for tasks: the prompt an agent receives, its headless argv, and the final
//! answer read back from its output. No I/O.

use super::TaskContext;
use crate::panes::text::strip_ansi;

/// Placeholder replaced by the prompt text in a `headless` argv element.
pub const PROMPT: &str = "{prompt}";
/// Placeholder replaced by the path of a file holding the prompt.
pub const PROMPT_FILE: &str = "{prompt_file}";

/// The prompt for `task` with its context: the task, then the files, the requirements and,
/// when tests are required, the instruction to make them pass.
pub fn build(task: &str, context: &TaskContext, test_command: Option<&[String]>) -> String {
    let mut prompt = task.trim_end().to_string();
    if !context.files.is_empty() {
        prompt.push_str("\n\nFiles:\n");
        for file in &context.files {
            prompt.push_str(&format!("- {file}\n"));
        }
    }
    if !context.requirements.is_empty() {
        prompt.push_str(if context.files.is_empty() {
            "\n\n"
        } else {
            "\n"
        });
        prompt.push_str("Requirements:\n");
        for requirement in &context.requirements {
            prompt.push_str(&format!("- {requirement}\n"));
        }
    }
    if context.tests_required {
        let tail = match test_command {
            Some(argv) => format!(" (`{}`)", argv.join(" ")),
            None => String::new(),
        };
        prompt = prompt.trim_end().to_string();
        prompt.push_str(&format!(
            "\n\nWhen you are done, make sure the tests pass{tail}."
        ));
    }
    prompt.trim_end().to_string()
}

/// Whether a headless template reads its prompt from a file.
pub fn wants_file(template: &[String]) -> bool {
    template.iter().any(|arg| arg.contains(PROMPT_FILE))
}

/// Whether a headless template puts the prompt itself on the command line (`{prompt}`),
/// where every local user can read it (`ps`, `/proc/<pid>/cmdline`).
pub fn shows_prompt(template: &[String]) -> bool {
    template.iter().any(|arg| arg.contains(PROMPT))
}

/// Whether a headless template has no placeholder: the agent reads its prompt on its
/// standard input (a private file the daemon opens for it).
pub fn wants_stdin(template: &[String]) -> bool {
    !wants_file(template) && !shows_prompt(template)
}

/// The argv of a headless run: every `{prompt}` replaced by the prompt and every
/// `{prompt_file}` by `prompt_file`. Each element stays one argument; nothing is split or
/// interpreted by a shell.
pub fn headless_argv(template: &[String], prompt: &str, prompt_file: Option<&str>) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            let arg = arg.replace(PROMPT_FILE, prompt_file.unwrap_or(""));
            arg.replace(PROMPT, prompt)
        })
        .collect()
}

/// Lines of output kept as a result's `output_tail`.
pub const TAIL_LINES: usize = 40;

/// The agent's final answer and the tail of its output, from the text of its pane history
/// (`capture-pane -p -J`), each at most `max_bytes`. When a line of the output is a JSON
/// object with a string `result` (as `claude -p --output-format json` prints), that is the
/// answer; otherwise it is the last non-blank lines.
pub fn final_answer(history: &str, max_bytes: usize) -> (String, String) {
    let text = strip_ansi(history);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.starts_with("Pane is dead ("))
        .collect();
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let lines = &lines[..end];
    let tail = tail_bytes(
        &lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"),
        max_bytes,
    );
    let structured = lines.iter().rev().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        value.get("result")?.as_str().map(str::to_string)
    });
    let message = match structured {
        Some(result) => tail_bytes(result.trim(), max_bytes),
        None => {
            let last: Vec<&str> = lines
                .iter()
                .rev()
                .filter(|l| !l.trim().is_empty())
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            tail_bytes(&last.join("\n"), max_bytes)
        }
    };
    (message, tail)
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_prompt_carries_the_context() {
        let context = TaskContext {
            files: vec!["src/auth.py".into()],
            requirements: vec!["Use bcrypt".into()],
            tests_required: true,
        };
        let prompt = build("Implement auth\n", &context, Some(&argv(&["pytest", "-q"])));
        assert_eq!(
            prompt,
            "Implement auth\n\nFiles:\n- src/auth.py\n\nRequirements:\n- Use bcrypt\n\n\
             When you are done, make sure the tests pass (`pytest -q`)."
        );
        assert_eq!(
            build("Just this", &TaskContext::default(), None),
            "Just this"
        );
    }

    #[test]
    fn placeholders_are_replaced_inside_single_arguments() {
        let template = argv(&[
            "aider",
            "--message={prompt}",
            "{prompt}",
            "--file",
            "{prompt_file}",
        ]);
        let out = headless_argv(&template, "a; rm -rf / #(x)", Some("/s/p.txt"));
        assert_eq!(
            out,
            argv(&[
                "aider",
                "--message=a; rm -rf / #(x)",
                "a; rm -rf / #(x)",
                "--file",
                "/s/p.txt"
            ])
        );
        assert!(wants_file(&template));
        assert!(!wants_file(&argv(&["x", "{prompt}"])));
    }

    #[test]
    fn the_final_answer_is_the_json_result_or_the_last_lines() {
        let history = "working...\n{\"type\":\"result\",\"result\":\"Done: added auth\"}\n\n\nPane is dead (status 0, Mon)\n";
        let (message, tail) = final_answer(history, 1000);
        assert_eq!(message, "Done: added auth");
        assert!(tail.ends_with("\"Done: added auth\"}"), "{tail}");
        let (message, _) = final_answer("\x1b[1mstep 1\x1b[0m\nfinal answer: ok\n\n", 1000);
        assert_eq!(message, "step 1\nfinal answer: ok");
        let long: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let (message, tail) = final_answer(&long, 64);
        assert!(message.len() <= 64 && message.ends_with("line 999"));
        assert!(tail.len() <= 64 && tail.ends_with("line 999"));
    }

    #[test]
    fn tails_cut_at_character_boundaries() {
        assert_eq!(tail_bytes("héllo", 4), "llo");
        assert_eq!(tail_bytes("ab", 4), "ab");
    }
}
