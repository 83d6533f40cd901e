//! Repositories that try to make the daemon's own git calls run a program: one repository
//! per way git can be told to execute something, each with a delegated task in place and one
//! with `isolation: "worktree"` (the daemon's git calls: `rev-parse`, `status`, `diff`,
//! `ls-files`, `hash-object`, `worktree add` and its checkout). Every hostile program only
//! creates a marker file outside the work dir; none may ever appear, and the tasks' results
//! must still be right.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::{DaemonProcess, git, git_repo};

/// What every task does: one committed file changed, one new file.
const TASK: &str = "WRITE a.txt changed\nWRITE new.txt new";
/// What the daemon must report for [`TASK`].
const CHANGED: [&str; 2] = ["a.txt", "new.txt"];

/// One attack: how a repository is made hostile after its first commit.
struct Vector {
    name: &'static str,
    /// Makes `repo` (committed, clean) try to run `touch <marker>`.
    setup: fn(repo: &Path, marker: &Path),
    /// Whether the worktree task must still succeed with the right files: `false` where the
    /// attack leaves HEAD's tree unreadable (an object removed so that git would fetch it);
    /// that task must fail to start and leave no worktree behind. The task in place must
    /// always succeed.
    worktree_usable: bool,
}

fn config(repo: &Path, key: &str, value: &str) {
    git(repo, &["config", key, value]);
}

fn touch_cmd(marker: &Path) -> String {
    format!("touch '{}'", marker.display())
}

/// A shell filter that marks and passes its input through unchanged.
fn marking_filter(marker: &Path) -> String {
    format!("{}; cat", touch_cmd(marker))
}

/// Writes filter `name`, marking both ways, into the config file `file` (one the repository
/// includes).
fn marking_filter_in(repo: &Path, file: &str, name: &str, marker: &Path) {
    for way in ["clean", "smudge"] {
        let key = format!("filter.{name}.{way}");
        git(repo, &["config", "-f", file, &key, &marking_filter(marker)]);
    }
}

fn write_script(path: &Path, marker: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{}\nexit 1\n", touch_cmd(marker))).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn attributes(repo: &Path, lines: &str) {
    std::fs::create_dir_all(repo.join(".git/info")).unwrap();
    std::fs::write(repo.join(".git/info/attributes"), lines).unwrap();
}

/// A partial clone whose promisor remote is `url`, with the tree of `sub/` removed so that
/// any command that needs it would fetch it.
fn promisor(repo: &Path, url: &str) {
    let tree = git(repo, &["rev-parse", "HEAD:sub"]);
    let tree = tree.trim();
    std::fs::remove_file(repo.join(format!(".git/objects/{}/{}", &tree[..2], &tree[2..]))).unwrap();
    config(repo, "core.repositoryformatversion", "1");
    config(repo, "extensions.partialClone", "origin");
    config(repo, "remote.origin.promisor", "true");
    config(repo, "remote.origin.url", url);
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "filter-clean",
        setup: |repo, marker| {
            std::fs::write(repo.join(".gitattributes"), "* filter=v\n").unwrap();
            git(repo, &["add", ".gitattributes"]);
            git(repo, &["commit", "-q", "-m", "attributes"]);
            config(repo, "filter.v.clean", &marking_filter(marker));
        },
        worktree_usable: true,
    },
    Vector {
        name: "filter-smudge",
        setup: |repo, marker| {
            attributes(repo, "* filter=v\n");
            config(repo, "filter.v.smudge", &marking_filter(marker));
        },
        worktree_usable: true,
    },
    Vector {
        name: "filter-process",
        setup: |repo, marker| {
            attributes(repo, "* filter=v\n");
            config(repo, "filter.v.process", &touch_cmd(marker));
            config(repo, "filter.v.required", "true");
        },
        worktree_usable: true,
    },
    Vector {
        name: "filter-named-with-equals",
        setup: |repo, marker| {
            attributes(repo, "* filter=a=b\n");
            config(repo, "filter.a=b.clean", &marking_filter(marker));
            config(repo, "filter.a=b.smudge", &marking_filter(marker));
        },
        worktree_usable: true,
    },
    Vector {
        name: "diff-external",
        setup: |repo, marker| config(repo, "diff.external", &touch_cmd(marker)),
        worktree_usable: true,
    },
    Vector {
        name: "diff-driver-textconv-and-command",
        setup: |repo, marker| {
            attributes(repo, "* diff=d\n");
            config(repo, "diff.d.textconv", &marking_filter(marker));
            config(repo, "diff.d.command", &touch_cmd(marker));
        },
        worktree_usable: true,
    },
    Vector {
        name: "core-fsmonitor",
        setup: |repo, marker| {
            let hook = repo.join(".git/fsmonitor.sh");
            write_script(&hook, marker);
            config(repo, "core.fsmonitor", hook.to_str().unwrap());
        },
        worktree_usable: true,
    },
    Vector {
        name: "hooks-in-hookspath-and-hooks-dir",
        setup: |repo, marker| {
            for dir in [".git/hooks", ".git/evil-hooks"] {
                for hook in [
                    "post-checkout",
                    "reference-transaction",
                    "post-index-change",
                    "pre-auto-gc",
                ] {
                    write_script(&repo.join(dir).join(hook), marker);
                }
            }
            let hooks = repo.join(".git/evil-hooks");
            config(repo, "core.hooksPath", hooks.to_str().unwrap());
        },
        worktree_usable: true,
    },
    Vector {
        name: "configured-hooks",
        setup: |repo, marker| {
            for event in [
                "post-checkout",
                "reference-transaction",
                "post-index-change",
            ] {
                git(repo, &["config", "--add", "hook.evil.event", event]);
            }
            config(repo, "hook.evil.command", &touch_cmd(marker));
        },
        worktree_usable: true,
    },
    Vector {
        name: "include-path",
        setup: |repo, marker| {
            let included = repo.join(".git/evil.inc");
            let file = included.to_str().unwrap();
            marking_filter_in(repo, file, "inc", marker);
            attributes(repo, "* filter=inc\n");
            config(repo, "include.path", file);
        },
        worktree_usable: true,
    },
    Vector {
        name: "includeif-onbranch-of-the-task",
        setup: |repo, marker| {
            let included = repo.join(".git/branch.inc");
            let file = included.to_str().unwrap();
            marking_filter_in(repo, file, "w", marker);
            attributes(repo, "* filter=w\n");
            config(repo, "includeIf.onbranch:orchestra/**.path", file);
        },
        worktree_usable: true,
    },
    Vector {
        name: "includeif-gitdir",
        setup: |repo, marker| {
            let included = repo.join(".git/gitdir.inc");
            let file = included.to_str().unwrap();
            marking_filter_in(repo, file, "g", marker);
            attributes(repo, "* filter=g\n");
            let key = format!("includeIf.gitdir:{}/.git/.path", repo.display());
            config(repo, &key, file);
        },
        worktree_usable: true,
    },
    Vector {
        name: "config-worktree",
        setup: |repo, marker| {
            config(repo, "core.repositoryformatversion", "1");
            config(repo, "extensions.worktreeConfig", "true");
            attributes(repo, "* filter=wt\n");
            git(
                repo,
                &[
                    "config",
                    "--worktree",
                    "filter.wt.clean",
                    &marking_filter(marker),
                ],
            );
        },
        worktree_usable: true,
    },
    Vector {
        name: "submodule-with-its-own-filter",
        setup: |repo, marker| {
            let source = repo.with_file_name(format!(
                "{}-module",
                repo.file_name().unwrap().to_str().unwrap()
            ));
            git_repo(&source, &[("m.txt", "module\n")]);
            let source = source.to_str().unwrap();
            let add = ["-c", "protocol.file.allow=always", "submodule", "add", "-q"];
            git(repo, &[&add[..], &[source, "sm"]].concat());
            git(repo, &["commit", "-q", "-m", "submodule"]);
            // The module's own configuration and attributes, which the superproject's
            // configuration does not show.
            let module = repo.join("sm");
            git(
                &module,
                &["config", "filter.s.clean", &marking_filter(marker)],
            );
            let info = repo.join(".git/modules/sm/info");
            std::fs::create_dir_all(&info).unwrap();
            std::fs::write(info.join("attributes"), "* filter=s\n").unwrap();
            let file = std::fs::File::options()
                .append(true)
                .open(module.join("m.txt"))
                .unwrap();
            file.set_modified(std::time::SystemTime::now()).unwrap();
        },
        worktree_usable: true,
    },
    Vector {
        name: "promisor-remote-core-sshcommand",
        setup: |repo, marker| {
            promisor(repo, "ssh://example.invalid/repo");
            config(repo, "core.sshCommand", &touch_cmd(marker));
            config(repo, "protocol.ssh.allow", "always");
        },
        worktree_usable: false,
    },
    Vector {
        name: "promisor-remote-ext-url",
        setup: |repo, marker| {
            let url = format!("ext::sh -c touch% {}", marker.display());
            promisor(repo, &url);
            config(repo, "protocol.ext.allow", "always");
        },
        worktree_usable: false,
    },
    Vector {
        name: "promisor-remote-uploadpack",
        setup: |repo, marker| {
            promisor(repo, repo.to_str().unwrap());
            config(
                repo,
                "remote.origin.uploadpack",
                &format!("{}; git-upload-pack", touch_cmd(marker)),
            );
            config(repo, "protocol.file.allow", "always");
        },
        worktree_usable: false,
    },
    Vector {
        name: "programs-for-commands-the-daemon-never-runs",
        setup: |repo, marker| {
            attributes(repo, "* merge=m\n");
            let cmd = touch_cmd(marker);
            for key in [
                "core.pager",
                "pager.status",
                "pager.diff",
                "core.editor",
                "sequence.editor",
                "core.askPass",
                "credential.helper",
                "gpg.program",
                "merge.m.driver",
                "core.alternateRefsCommand",
                "gc.recentObjectsHook",
            ] {
                config(repo, key, &cmd);
            }
            config(repo, "gc.auto", "1");
            config(repo, "status.submoduleSummary", "true");
        },
        worktree_usable: true,
    },
];

#[test]
fn no_repository_makes_the_daemons_git_calls_run_a_program() {
    let daemon = DaemonProcess::start_with("[tasks]\nmax_running = 8");
    let token = daemon.control();
    let markers = daemon.dir.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let mut tickets: Vec<(&Vector, bool, String, String)> = Vec::new();
    for vector in VECTORS {
        for worktree in [false, true] {
            // A repository (and marker) per vector and isolation, so that each run of a
            // program is told apart.
            let name = format!("{}-{}", vector.name, if worktree { "wt" } else { "in" });
            let repo = daemon.work.join(&name);
            git_repo(&repo, &[("a.txt", "hello\n"), ("sub/f", "s\n")]);
            let marker = markers.join(&name);
            (vector.setup)(&repo, &marker);
            // Stat-dirty, so git re-reads the file (and would filter it) on every status.
            let a = std::fs::File::options()
                .append(true)
                .open(repo.join("a.txt"))
                .unwrap();
            a.set_modified(std::time::SystemTime::now()).unwrap();
            let mut body = json!({"agent_type": "task", "task": TASK, "working_dir": repo});
            if worktree {
                body["isolation"] = json!("worktree");
            }
            let answer = daemon.delegate(&token, &body);
            let id = answer["ticket_id"].as_str().unwrap().to_string();
            tickets.push((vector, worktree, name, id));
        }
    }
    let mut ran = Vec::new();
    let mut wrong = Vec::new();
    for (vector, worktree, name, id) in &tickets {
        let done = daemon.wait_task_final(&token, id);
        let what = format!(
            "{} ({})",
            vector.name,
            if *worktree { "worktree" } else { "in place" }
        );
        if markers.join(name).exists() {
            ran.push(what.clone());
        }
        let checked = if *worktree && !vector.worktree_usable {
            check_refused(&daemon, &done, id)
        } else {
            check_result(&done, *worktree)
        };
        if let Err(why) = checked {
            wrong.push(format!("{what}: {why}"));
        }
    }
    assert!(
        ran.is_empty() && wrong.is_empty(),
        "the daemon's git calls ran a repository's program in {ran:?}; wrong results: {wrong:#?}"
    );
}

/// Why the finished worktree ticket `done` (`id`) did not fail to start cleanly, if it did not.
fn check_refused(daemon: &DaemonProcess, done: &Value, id: &str) -> Result<(), String> {
    if done["status"] != "failed" || done["result"]["error_code"] != "AGENT_SPAWN_FAILED" {
        return Err(format!("{done}"));
    }
    let left = daemon.state.join("worktrees").join(id);
    if left.exists() {
        return Err(format!("{} was left behind", left.display()));
    }
    Ok(())
}

/// Why the finished ticket `done` is not the right result of [`TASK`], if it is not.
fn check_result(done: &Value, worktree: bool) -> Result<(), String> {
    if done["status"] != "completed" {
        return Err(format!("{done}"));
    }
    let files: Vec<&str> = done["result"]["files_modified"]
        .as_array()
        .map(|files| files.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if files != CHANGED {
        return Err(format!("files_modified {files:?}"));
    }
    if worktree {
        let dir = PathBuf::from(done["result"]["worktree"].as_str().unwrap_or_default());
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if read("a.txt") != "changed\n" || read("sub/f") != "s\n" {
            return Err(format!("the worktree {} is not checked out", dir.display()));
        }
    }
    Ok(())
}
