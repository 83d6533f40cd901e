//! Screens match their offsets during floods: a viewer that subscribes while the emulator
//! falls behind a flood, catches up, or (tmux) is re-seeded gets a screen that shows the
//! output before its offset and nothing after it, followed by the output from there: no
//! line twice, none skipped without a gap notice, nothing starting inside a character.

use std::time::Duration;

use serde_json::json;

use crate::common::{DaemonProcess, Ws, id_of};
use crate::observe::subscribe_with_screen;

/// Viewers that subscribe during one flood, one after another.
const VIEWERS: usize = 8;

#[test]
fn fresh_viewers_during_a_flood_get_screens_at_their_offsets() {
    for backend in ["tmux", "pty"] {
        screens_during_a_flood(backend);
    }
}

fn screens_during_a_flood(backend: &str) {
    // The smallest backlog, so that the emulator falls behind the 3.2 MB flood and catches
    // up while it runs.
    let daemon = DaemonProcess::start_on(backend, "[panes]\nbacklog_bytes = 65536\n");
    let token = daemon.control();
    let session = id_of(&daemon.spawn(&token, "flood"));
    let mut driver = daemon.ws(&token);
    let mut seen = subscribe_with_screen(&mut driver, &session);
    let viewers: Vec<Ws> = (0..VIEWERS).map(|_| daemon.ws(&token)).collect();
    driver.send(json!({"type": "terminal_input", "session_id": session, "data": "go\r"}));
    let readers: Vec<_> = viewers
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let session = session.clone();
            std::thread::spawn(move || {
                // Places each subscription at another moment of the flood; nothing waits
                // on it.
                std::thread::sleep(Duration::from_millis(i as u64 * 50));
                read_segments(&mut ws, &session)
            })
        })
        .collect();
    seen.read_until(&mut driver, &session, "\r\nEND\r\n");
    for (i, reader) in readers.into_iter().enumerate() {
        for segment in reader.join().unwrap() {
            check(backend, i, &segment);
        }
    }
}

/// A screen a viewer got and the output that followed it, up to the next screen.
#[derive(Default)]
struct Segment {
    /// Whether a gap notice came before the screen.
    after_gap: bool,
    screen: String,
    text: String,
}

/// Subscribes and reads until the flood's end: each screen (the first, and those after
/// a resync) with the output after it, checking that the output continues exactly.
fn read_segments(ws: &mut Ws, session: &str) -> Vec<Segment> {
    let ack = ws.subscribe(session);
    assert_eq!(ack["type"], "subscribed", "{ack}");
    let mut segments: Vec<Segment> = Vec::new();
    let mut gap = false;
    let mut next = None;
    loop {
        let message = ws.recv();
        if message["session_id"] != session {
            continue;
        }
        match message["type"].as_str() {
            Some("terminal_gap") => gap = true,
            Some("terminal_output") if message["snapshot"] == true => {
                let screen = message["data"].as_str().unwrap().to_string();
                let done = screen.contains("END");
                segments.push(Segment {
                    after_gap: std::mem::take(&mut gap),
                    screen,
                    text: String::new(),
                });
                next = message["offset"].as_u64();
                if done {
                    return segments;
                }
            }
            Some("terminal_output") => {
                let offset = message["offset"].as_u64().unwrap();
                assert_eq!(Some(offset), next, "output continues where it left off");
                next = message["next_offset"].as_u64();
                let segment = segments.last_mut().expect("a screen first");
                segment.text.push_str(message["data"].as_str().unwrap());
                if segment.text.contains("\r\nEND\r\n") {
                    return segments;
                }
            }
            _ => {}
        }
    }
}

/// The numbers of the flood's lines in `text`: those that start right after a line break
/// (so never a number cut at its front).
fn line_numbers(text: &str) -> Vec<u64> {
    text.split("\r\n")
        .skip(1)
        .filter_map(|line| line.strip_suffix(" héllo wörld ✓ 😀 the quick brown fox"))
        .filter_map(|number| number.parse().ok())
        .collect()
}

/// The highest flood line a screen shows.
fn highest_on_screen(screen: &str) -> Option<u64> {
    screen
        .match_indices(" héllo")
        .filter_map(|(at, _)| {
            let digits: String = screen[..at]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.chars().rev().collect::<String>().parse().ok()
        })
        .max()
}

fn check(backend: &str, viewer: usize, segment: &Segment) {
    let screen = &segment.screen;
    if screen.contains("END") {
        return;
    }
    let text = segment
        .text
        .find("\r\nEND\r\n")
        .map_or(segment.text.as_str(), |end| &segment.text[..end]);
    assert!(
        !text.contains('\u{fffd}'),
        "{backend} viewer {viewer}: output starts or breaks inside a character (after a gap: \
         {}): {:?}",
        segment.after_gap,
        text.chars().take(100).collect::<String>()
    );
    let numbers = line_numbers(text);
    for pair in numbers.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{backend} viewer {viewer}: lines after the screen are not consecutive"
        );
    }
    let (Some(&first), Some(shown)) = (numbers.first(), highest_on_screen(screen)) else {
        return;
    };
    // The screen's last line may be complete (the output then starts with the next one,
    // whose number has no line break before it) or not (the output completes it first).
    assert!(
        first > shown,
        "{backend} viewer {viewer}: the screen shows line {shown}, but the output after its \
         offset starts again at line {first}"
    );
    if !segment.after_gap {
        assert!(
            first <= shown + 2,
            "{backend} viewer {viewer}: lines {} to {} are missing, without a gap notice",
            shown + 1,
            first - 1
        );
    }
}
