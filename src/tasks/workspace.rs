//! What a task changed in its working directory: a baseline taken when it starts (git state,
//! or a bounded file snapshot outside git), the files changed since, and worktree isolation.
//!
//! Blocks (runs git and walks the file system), so call it from worker threads. Never writes
//! to the repository except when asked to create a worktree, never follows symlinks, and
//! never claims a path outside the working directory.

use super::{git, process};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Id of the empty tree in SHA-1 repositories (SHA-256 ones are asked).
const EMPTY_TREE_SHA1: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
/// Files handed to one `git hash-object` call.
const HASH_BATCH: usize = 200;
/// In a truncated snapshot, a file not recorded counts as new when its mtime is at most this
/// much older than the snapshot (file-system clocks are coarser than the system clock).
const MTIME_SLACK_NS: u64 = 1_000_000_000;

/// Bounds on the work done to capture and compare a working directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Most files recorded in a snapshot, or fingerprinted as dirty in a git baseline.
    pub max_files: usize,
    /// Timeout of each git command.
    pub command_timeout: Duration,
}

/// A working directory's state when a task started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Baseline {
    /// The directory is inside a git work tree.
    Git {
        /// The work tree's top level.
        top: PathBuf,
        /// The commit HEAD named at the start; `None` on an unborn branch.
        head: Option<String>,
        /// The directory relative to `top`, empty or ending in `/` (git's `--show-prefix`).
        prefix: String,
        /// Files under the directory that were already dirty, top-relative, with their
        /// fingerprint (`git hash-object` id, `link:<target>`, `dir` or `deleted`).
        dirty: BTreeMap<String, String>,
        /// Whether more dirty files existed than `max_files`; the rest were not recorded.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// Not a git work tree: a bounded snapshot of the files.
    Snapshot {
        /// Relative path of each regular file or symlink: `[size, mtime in ns]`.
        files: BTreeMap<String, [u64; 2]>,
        /// Whether the walk stopped at `max_files`.
        truncated: bool,
        /// When the snapshot was taken, in ns since the Unix epoch.
        taken_ns: u64,
    },
}

/// The top level of the git work tree containing `dir`, if any.
pub fn git_toplevel(dir: &Path, timeout: Duration) -> Option<PathBuf> {
    locate(dir, timeout).map(|(top, _)| top)
}

/// Records the state of `dir` so that [`changed_files`] can later tell what a task changed.
pub fn capture(dir: &Path, limits: &ScanLimits) -> Result<Baseline, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let timeout = limits.command_timeout;
    let Some((top, prefix)) = locate(dir, timeout) else {
        let mut files = BTreeMap::new();
        let taken_ns = nanos(SystemTime::now());
        let truncated = walk(dir, limits.max_files, |path, meta| {
            files.insert(path, stamp(meta));
        });
        return Ok(Baseline::Snapshot {
            files,
            truncated,
            taken_ns,
        });
    };
    let head = head_commit(&top, timeout)?;
    let mut status = git(&top, timeout)?;
    let pathspec = if prefix.is_empty() { "." } else { &prefix };
    status.args([
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--ignore-submodules=dirty",
        "--",
        pathspec,
    ]);
    let mut paths = parse_status(&run_git(status, timeout)?);
    paths.retain(|p| p.starts_with(&prefix));
    let truncated = paths.len() > limits.max_files;
    paths.truncate(limits.max_files);
    let dirty = fingerprints(&top, &paths, timeout)?;
    Ok(Baseline::Git {
        top,
        head,
        prefix,
        dirty,
        truncated,
    })
}

/// Files created, modified or deleted under `dir` since `baseline` was captured there: paths
/// relative to `dir`, sorted and unique. In git, commits made since the start count too, and
/// files already dirty at the start count only when their content changed again.
pub fn changed_files(
    dir: &Path,
    baseline: &Baseline,
    limits: &ScanLimits,
) -> Result<Vec<String>, String> {
    let timeout = limits.command_timeout;
    let mut changed = BTreeSet::new();
    match baseline {
        Baseline::Git {
            top,
            head,
            prefix,
            dirty,
            ..
        } => {
            let base = match head {
                Some(commit) => commit.clone(),
                None => empty_tree(top, timeout)?,
            };
            let pathspec = if prefix.is_empty() { "." } else { prefix };
            let mut diff = git(top, timeout)?;
            diff.args(["diff", "--name-only", "-z", "--no-renames", "--no-ext-diff"])
                .args(["--no-textconv", "--ignore-submodules=dirty"])
                .arg(&base)
                .args(["--", pathspec]);
            let mut untracked = git(top, timeout)?;
            untracked.args([
                "ls-files",
                "--others",
                "--exclude-standard",
                "-z",
                "--",
                pathspec,
            ]);
            let mut candidates = split_z(&run_git(diff, timeout)?);
            candidates.extend(split_z(&run_git(untracked, timeout)?));
            candidates.retain(|p| !dirty.contains_key(p));
            // A dirty file is claimed when its content changed, even back to the committed one.
            let paths: Vec<String> = dirty.keys().cloned().collect();
            let now = fingerprints(top, &paths, timeout)?;
            candidates.extend(
                now.into_iter()
                    .filter(|(p, f)| dirty.get(p) != Some(f))
                    .map(|(p, _)| p),
            );
            changed.extend(
                candidates
                    .iter()
                    .filter_map(|p| p.strip_prefix(prefix.as_str()))
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
        }
        Baseline::Snapshot {
            files,
            truncated,
            taken_ns,
        } => {
            let mut seen = HashSet::new();
            walk(dir, limits.max_files.saturating_mul(2), |path, meta| {
                let now = stamp(meta);
                match files.get(&path) {
                    Some(old) => {
                        if *old != now {
                            changed.insert(path.clone());
                        }
                        seen.insert(path);
                    }
                    None if !truncated || now[1] >= taken_ns.saturating_sub(MTIME_SLACK_NS) => {
                        changed.insert(path);
                    }
                    None => {}
                }
            });
            for (path, old) in files.iter().filter(|(p, _)| !seen.contains(*p)) {
                match std::fs::symlink_metadata(dir.join(path)) {
                    Ok(meta) if stamp(&meta) == *old => {}
                    _ => {
                        changed.insert(path.clone());
                    }
                }
            }
        }
    }
    Ok(changed.into_iter().collect())
}

/// Creates a worktree of the repository containing `dir` at `dest`, on a new branch `branch`
/// from the current HEAD, and returns the directory in it that corresponds to `dir` (created
/// if the repository does not track it). Reuses `dest` when it already is that worktree.
pub fn create_worktree(
    dir: &Path,
    dest: &Path,
    branch: &str,
    timeout: Duration,
) -> Result<PathBuf, String> {
    let (top, prefix) = locate(dir, timeout).ok_or_else(|| {
        format!(
            "{} is not inside a git repository; worktree isolation needs one",
            dir.display()
        )
    })?;
    if head_commit(&top, timeout)?.is_none() {
        return Err("worktree isolation needs a repository with at least one commit".into());
    }
    let mut check = git(&top, timeout)?;
    check.args(["check-ref-format", "--branch", branch]);
    if branch.starts_with('-') || !process::run(&mut check, timeout, 0)?.success() {
        return Err(format!("{branch:?} is not a valid branch name"));
    }
    let inside = |root: &Path| -> Result<PathBuf, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("{}: {e}", root.display()))?;
        let inner = root.join(&prefix);
        std::fs::create_dir_all(&inner).map_err(|e| format!("{}: {e}", inner.display()))?;
        Ok(inner)
    };
    if dest.exists() {
        if is_worktree_of(dest, &top, branch, timeout) {
            return inside(dest);
        }
        let empty = std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none());
        if !empty {
            return Err(format!(
                "{} already exists and is not the worktree of branch {branch}",
                dest.display()
            ));
        }
    }
    // A registration left by a worktree whose directory was removed would block the add.
    let mut prune = git(&top, timeout)?;
    prune.args(["worktree", "prune"]);
    run_git(prune, timeout)?;
    let mut exists = git(&top, timeout)?;
    exists
        .args(["rev-parse", "--verify", "-q"])
        .arg(format!("refs/heads/{branch}"));
    let mut add = git(&top, timeout)?;
    // Checked out below, with the configuration that applies in the new worktree (an
    // `includeIf "onbranch:..."` may name programs only there).
    add.args(["worktree", "add", "--no-checkout"]);
    if process::run(&mut exists, timeout, 0)?.success() {
        // The branch survived an earlier attempt; it is ours (the daemon names branches).
        add.arg("--").arg(dest).arg(branch);
    } else {
        add.args(["-b", branch, "--"]).arg(dest).arg("HEAD");
    }
    run_git(add, timeout)?;
    // What `git worktree add` itself runs to check out.
    let checkout = git(dest, timeout).and_then(|mut checkout| {
        checkout.args(["reset", "--hard", "--no-recurse-submodules", "-q"]);
        run_git(checkout, timeout)
    });
    if let Err(why) = checkout {
        // Never leave a half checked-out worktree that a retry would take as ready.
        let _ = std::fs::remove_dir_all(dest);
        if let Ok(mut prune) = git(&top, timeout) {
            prune.args(["worktree", "prune"]);
            let _ = run_git(prune, timeout);
        }
        return Err(why);
    }
    inside(dest)
}

/// A hardened git command in `dir` ([`git::command`]).
fn git(dir: &Path, timeout: Duration) -> Result<Command, String> {
    git::command(dir, timeout)
}

/// Runs a git command and returns its standard output, or why it failed.
fn run_git(command: Command, timeout: Duration) -> Result<Vec<u8>, String> {
    git::run(command, timeout)
}

/// The work tree's top level and `dir` relative to it, when `dir` is in one.
fn locate(dir: &Path, timeout: Duration) -> Option<(PathBuf, String)> {
    let mut command = git(dir, timeout).ok()?;
    command.args(["rev-parse", "--show-toplevel", "--show-prefix"]);
    let out = run_git(command, timeout).ok()?;
    let text = String::from_utf8(out).ok()?;
    let mut lines = text.lines();
    let top = PathBuf::from(lines.next().filter(|t| !t.is_empty())?);
    Some((top, lines.next().unwrap_or("").to_owned()))
}

/// The commit HEAD names, or `None` on an unborn branch.
fn head_commit(top: &Path, timeout: Duration) -> Result<Option<String>, String> {
    let mut command = git(top, timeout)?;
    command.args(["rev-parse", "--verify", "-q", "HEAD^{commit}"]);
    let out = process::run(&mut command, timeout, 4096)?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match out.exit_code {
        Some(0) if !id.is_empty() => Ok(Some(id)),
        Some(1) if !out.timed_out => Ok(None),
        _ => Err(format!(
            "git rev-parse HEAD failed: {}",
            String::from_utf8_lossy(&out.output).trim()
        )),
    }
}

fn empty_tree(top: &Path, timeout: Duration) -> Result<String, String> {
    let mut command = git(top, timeout)?;
    command.args(["hash-object", "-t", "tree", "--no-filters", "/dev/null"]);
    let id = String::from_utf8_lossy(&run_git(command, timeout)?)
        .trim()
        .to_owned();
    Ok(if id.is_empty() {
        EMPTY_TREE_SHA1.into()
    } else {
        id
    })
}

/// Whether `dest` is the top of a worktree of the same repository as `top`, on `branch`.
fn is_worktree_of(dest: &Path, top: &Path, branch: &str, timeout: Duration) -> bool {
    let common = |dir: &Path| -> Option<PathBuf> {
        let mut command = git(dir, timeout).ok()?;
        command.args(["rev-parse", "--path-format=absolute", "--git-common-dir"]);
        let out = String::from_utf8(run_git(command, timeout).ok()?).ok()?;
        Path::new(out.trim_end_matches('\n')).canonicalize().ok()
    };
    let on_branch = git(dest, timeout)
        .and_then(|mut head| {
            head.args(["symbolic-ref", "-q", "HEAD"]);
            run_git(head, timeout)
        })
        .is_ok_and(|out| out.trim_ascii_end() == format!("refs/heads/{branch}").as_bytes());
    on_branch
        && locate(dest, timeout).is_some_and(|(t, _)| Some(t) == dest.canonicalize().ok())
        && common(dest).is_some_and(|c| Some(c) == common(top))
}

/// Paths named by `git status --porcelain=v1 -z` (both sides of renames and copies).
fn parse_status(out: &[u8]) -> Vec<String> {
    let mut paths = Vec::new();
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    while let Some(entry) = fields.next() {
        if entry.len() < 4 {
            continue;
        }
        paths.push(String::from_utf8_lossy(&entry[3..]).into_owned());
        if entry[..2].iter().any(|&b| b == b'R' || b == b'C')
            && let Some(orig) = fields.next()
        {
            paths.push(String::from_utf8_lossy(orig).into_owned());
        }
    }
    paths
}

fn split_z(out: &[u8]) -> Vec<String> {
    out.split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Content fingerprints of top-relative `paths`.
fn fingerprints(
    top: &Path,
    paths: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, String>, String> {
    let mut prints = BTreeMap::new();
    let mut files = Vec::new();
    for path in paths {
        let full = top.join(path);
        let print = match std::fs::symlink_metadata(&full) {
            Err(_) => "deleted".to_owned(),
            Ok(m) if m.is_symlink() => match std::fs::read_link(&full) {
                Ok(target) => format!("link:{}", target.display()),
                Err(_) => "deleted".to_owned(),
            },
            Ok(m) if m.is_file() => {
                files.push(path);
                continue;
            }
            Ok(_) => "dir".to_owned(),
        };
        prints.insert(path.clone(), print);
    }
    for batch in files.chunks(HASH_BATCH) {
        let mut command = git(top, timeout)?;
        command.args(["hash-object", "--no-filters", "--"]);
        command.args(batch.iter().map(|p| top.join(p)));
        let out = String::from_utf8_lossy(&run_git(command, timeout)?).into_owned();
        let ids: Vec<&str> = out.lines().collect();
        if ids.len() != batch.len() {
            return Err("git hash-object printed an unexpected number of ids".into());
        }
        prints.extend(
            batch
                .iter()
                .map(|p| (*p).clone())
                .zip(ids.into_iter().map(str::to_owned)),
        );
    }
    Ok(prints)
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn stamp(meta: &Metadata) -> [u64; 2] {
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    let ns = mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec() as u64);
    [meta.len(), ns]
}

/// Walks `root` in a fixed order (sorted names, files of a directory before its
/// subdirectories), skipping `.git` and not following symlinks, and calls `visit` with the
/// relative path of each regular file or symlink, at most `cap` times. Returns whether it
/// stopped at the cap. Unreadable directories are skipped.
fn walk(root: &Path, cap: usize, mut visit: impl FnMut(String, &Metadata)) -> bool {
    let mut stack = vec![PathBuf::new()];
    let mut count = 0;
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        let mut dirs = Vec::new();
        for entry in entries {
            let Ok(meta) = entry.metadata() else { continue };
            let path = rel.join(entry.file_name());
            if meta.is_dir() {
                if entry.file_name() != ".git" {
                    dirs.push(path);
                }
            } else if meta.is_file() || meta.is_symlink() {
                if count == cap {
                    return true;
                }
                count += 1;
                visit(path.to_string_lossy().into_owned(), &meta);
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const LIMITS: ScanLimits = ScanLimits {
        max_files: 1000,
        command_timeout: Duration::from_secs(60),
    };

    fn sh(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ])
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("GIT_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A repository with `files` committed (none: an unborn branch).
    fn repo(files: &[&str]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        sh(tmp.path(), &["init", "-q"]);
        for f in files {
            write(tmp.path(), f, &format!("{f}\n"));
        }
        if !files.is_empty() {
            sh(tmp.path(), &["add", "-A"]);
            sh(tmp.path(), &["commit", "-q", "-m", "start"]);
        }
        tmp
    }

    fn changed(dir: &Path, base: &Baseline) -> Vec<String> {
        changed_files(dir, base, &LIMITS).unwrap()
    }

    #[test]
    fn git_claims_modified_staged_untracked_and_deleted() {
        let tmp = repo(&["a", "b", "c", "d"]);
        let dir = tmp.path();
        let base = capture(dir, &LIMITS).unwrap();
        assert!(matches!(&base, Baseline::Git { head: Some(_), dirty, .. } if dirty.is_empty()));
        assert!(changed(dir, &base).is_empty());
        write(dir, "a", "changed\n");
        write(dir, "b", "staged\n");
        sh(dir, &["add", "b"]);
        write(dir, "new dir/u ü", "untracked\n");
        fs::remove_file(dir.join("c")).unwrap();
        assert_eq!(changed(dir, &base), ["a", "b", "c", "new dir/u ü"]);
        let json = serde_json::to_string(&base).unwrap();
        assert_eq!(serde_json::from_str::<Baseline>(&json).unwrap(), base);
    }

    #[test]
    fn files_dirty_at_start_are_claimed_only_when_changed_again() {
        let tmp = repo(&["same", "again", "reverted", "kept"]);
        let dir = tmp.path();
        for f in ["same", "again", "reverted"] {
            write(dir, f, "dirty\n");
        }
        write(dir, "old-untracked", "x\n");
        fs::remove_file(dir.join("kept")).unwrap();
        let base = capture(dir, &LIMITS).unwrap();
        let Baseline::Git { dirty, .. } = &base else {
            panic!("{base:?}")
        };
        assert_eq!(dirty.len(), 5);
        assert_eq!(dirty["kept"], "deleted");
        write(dir, "again", "dirtier\n");
        sh(dir, &["checkout", "--", "reverted"]);
        assert_eq!(changed(dir, &base), ["again", "reverted"]);
    }

    #[test]
    fn commits_made_after_the_start_are_claimed() {
        let tmp = repo(&["a", "b"]);
        let dir = tmp.path();
        let base = capture(dir, &LIMITS).unwrap();
        write(dir, "a", "edited\n");
        write(dir, "n", "new\n");
        sh(dir, &["add", "-A"]);
        sh(dir, &["commit", "-q", "-m", "agent"]);
        assert_eq!(changed(dir, &base), ["a", "n"]);
    }

    #[test]
    fn a_subdirectory_never_claims_files_outside_it() {
        let tmp = repo(&["outside", "sub/inside", "subway/x"]);
        let sub = tmp.path().join("sub");
        let base = capture(&sub, &LIMITS).unwrap();
        assert!(matches!(&base, Baseline::Git { prefix, .. } if prefix == "sub/"));
        write(tmp.path(), "outside", "edited\n");
        write(tmp.path(), "subway/x", "edited\n");
        write(tmp.path(), "subway/y", "new\n");
        write(&sub, "inside", "edited\n");
        write(&sub, "deep/new", "new\n");
        assert_eq!(changed(&sub, &base), ["deep/new", "inside"]);
    }

    #[test]
    fn unborn_branch_compares_with_the_empty_tree() {
        let tmp = repo(&[]);
        let dir = tmp.path();
        write(dir, "before", "x\n");
        let base = capture(dir, &LIMITS).unwrap();
        assert!(matches!(&base, Baseline::Git { head: None, .. }));
        write(dir, "made", "y\n");
        sh(dir, &["add", "made"]);
        sh(dir, &["commit", "-q", "-m", "first"]);
        assert_eq!(changed(dir, &base), ["made"]);
    }

    #[test]
    fn snapshot_claims_new_changed_and_deleted_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for f in ["keep", "edit", "gone", "nested/deep", ".git/ignored"] {
            write(dir, f, "1\n");
        }
        std::os::unix::fs::symlink("keep", dir.join("link")).unwrap();
        let base = capture(dir, &LIMITS).unwrap();
        let Baseline::Snapshot {
            files, truncated, ..
        } = &base
        else {
            panic!("{base:?}")
        };
        assert!(!truncated);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["edit", "gone", "keep", "link", "nested/deep"]
        );
        assert!(changed(dir, &base).is_empty());
        write(dir, "edit", "longer\n");
        write(dir, "nested/new", "1\n");
        write(dir, ".git/other", "1\n");
        fs::remove_file(dir.join("gone")).unwrap();
        assert_eq!(changed(dir, &base), ["edit", "gone", "nested/new"]);
    }

    #[test]
    fn truncated_snapshot_still_tracks_what_it_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for f in ["a", "b", "c"] {
            write(dir, f, "1\n");
        }
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(dir.join("c"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let limits = ScanLimits {
            max_files: 2,
            ..LIMITS
        };
        let base = capture(dir, &limits).unwrap();
        let Baseline::Snapshot {
            files, truncated, ..
        } = &base
        else {
            panic!("{base:?}")
        };
        assert!(truncated);
        assert_eq!(files.len(), 2);
        fs::remove_file(dir.join("a")).unwrap();
        write(dir, "0-new", "1\n");
        assert_eq!(changed_files(dir, &base, &limits).unwrap(), ["0-new", "a"]);
    }

    #[test]
    fn worktrees_are_created_reused_and_refused() {
        let tmp = repo(&["sub/file", "top"]);
        let dest = tempfile::tempdir().unwrap();
        let wt = dest.path().join("wt");
        let t = Duration::from_secs(60);
        let inner = create_worktree(&tmp.path().join("sub"), &wt, "orchestra/ticket-1", t).unwrap();
        assert_eq!(inner, wt.canonicalize().unwrap().join("sub"));
        assert!(inner.join("file").is_file());
        let again = create_worktree(&tmp.path().join("sub"), &wt, "orchestra/ticket-1", t).unwrap();
        assert_eq!(again, inner);
        // A retry after the directory was lost reuses the branch.
        fs::remove_dir_all(&wt).unwrap();
        let retry = create_worktree(&tmp.path().join("sub"), &wt, "orchestra/ticket-1", t).unwrap();
        assert_eq!(retry, inner);
        let err = create_worktree(tmp.path(), &wt, "orchestra/ticket-2", t).unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        let err = create_worktree(tmp.path(), &dest.path().join("x"), "bad..name", t).unwrap_err();
        assert!(err.contains("not a valid branch name"), "{err}");
        let unborn = repo(&[]);
        let err = create_worktree(unborn.path(), &dest.path().join("u"), "b", t).unwrap_err();
        assert!(err.contains("at least one commit"), "{err}");
        let plain = tempfile::tempdir().unwrap();
        let err = create_worktree(plain.path(), &dest.path().join("p"), "b", t).unwrap_err();
        assert!(err.contains("not inside a git repository"), "{err}");
    }

    #[test]
    fn a_repositorys_filters_never_run_and_a_failed_checkout_leaves_no_worktree() {
        let tmp = repo(&["a", "sub/b"]);
        let dir = tmp.path();
        let markers = tempfile::tempdir().unwrap();
        let marker = markers.path().join("ran");
        let filter = format!("touch '{}'; cat", marker.display());
        for key in ["filter.v.clean", "filter.v.smudge", "filter.v.process"] {
            sh(dir, &["config", key, &filter]);
        }
        sh(dir, &["config", "filter.v.required", "true"]);
        write(dir, ".git/info/attributes", "* filter=v\n");
        let base = capture(dir, &LIMITS).unwrap();
        write(dir, "a", "edited\n");
        assert_eq!(changed(dir, &base), ["a"]);
        let wt = markers.path().join("wt");
        let t = Duration::from_secs(60);
        let inner = create_worktree(dir, &wt, "orchestra/t", t).unwrap();
        assert_eq!(fs::read_to_string(inner.join("sub/b")).unwrap(), "sub/b\n");
        assert!(!marker.exists(), "a filter ran");

        // HEAD's tree unreadable: the checkout fails and the worktree is removed.
        let tree = String::from_utf8(
            Command::new("git")
                .args(["-C", dir.to_str().unwrap(), "rev-parse", "HEAD:sub"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let tree = tree.trim();
        fs::remove_file(dir.join(format!(".git/objects/{}/{}", &tree[..2], &tree[2..]))).unwrap();
        let broken = markers.path().join("broken");
        let err = create_worktree(dir, &broken, "orchestra/u", t).unwrap_err();
        assert!(err.contains("git reset failed"), "{err}");
        assert!(!broken.exists());
        let err = create_worktree(dir, &broken, "orchestra/u", t).unwrap_err();
        assert!(
            err.contains("git reset failed"),
            "a retry checks out again: {err}"
        );
    }

    #[test]
    fn parses_status_with_renames() {
        let out = b" M a\0R  new\0old\0?? dir/u v\0";
        assert_eq!(parse_status(out), ["a", "new", "old", "dir/u v"]);
    }
}
