//! A minimal logger: one line per record on stderr, `<time> <LEVEL> <message>`.
//!
//! The level comes from `ORCHESTRA_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default
//! `info`). Callers are responsible for never passing tokens or secrets; request lines carry
//! the path without its query string for that reason.

use std::io::Write;
use std::time::SystemTime;

struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // Other crates' debug output (frame dumps, poller registrations) is noise here, and
        // could carry message payloads; only their warnings and errors get through.
        metadata.level() <= self.level
            && (metadata.level() <= log::Level::Warn || metadata.target().starts_with("orchestra"))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} {}\n",
            crate::time::rfc3339_millis(SystemTime::now()),
            record.level(),
            record.args()
        );
        // One write per line so concurrent threads never interleave within a line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger (once; later calls are ignored).
pub fn init() {
    let level = std::env::var("ORCHESTRA_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}
