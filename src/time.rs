//! Wall-clock formatting for the API: RFC 3339 UTC with second precision.

use std::time::SystemTime;

/// Formats `at` like `2025-01-10T12:00:00Z`.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Formats `at` with milliseconds, for log lines.
pub fn rfc3339_millis(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_seconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_736_510_400_123);
        assert_eq!(rfc3339(at), "2025-01-10T12:00:00Z");
        assert_eq!(rfc3339_millis(at), "2025-01-10T12:00:00.123Z");
        assert_eq!(unix_millis(at), 1_736_510_400_123);
    }
}
