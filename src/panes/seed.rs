//! Seeding the daemon's terminal state from tmux when capture is (re)armed on a pane that
//! already shows something (after a daemon restart, or when the emulator lost track).
//!
//! The seed comes from one atomic tmux command list ([`seed_command`]) — `display-message` (size, cursor and
//! modes), `pipe-pane` (the new pipe starts here), `capture-pane -e` (the screen) — so the
//! screen is exactly the state at the first byte of the new pipe. Pure parsing and encoding.

use crate::tmux::{self, CommandList, PaneId, UnsafeArgument};

/// Fields printed before the capture, tab-separated.
pub const SEED_FORMAT: &str = "#{pane_width}\t#{pane_height}\t#{cursor_x}\t#{cursor_y}\t\
#{cursor_flag}\t#{alternate_on}\t#{keypad_flag}\t#{keypad_cursor_flag}\t\
#{mouse_standard_flag}\t#{mouse_button_flag}\t#{mouse_any_flag}\t#{mouse_sgr_flag}\t\
#{scroll_region_upper}\t#{scroll_region_lower}\t#{@orchestra_paste}";

/// The session option where the daemon records the pane's bracketed-paste mode, which tmux
/// 3.3 does not expose as a format.
pub const PASTE_OPTION: &str = "@orchestra_paste";

/// The command list that captures a pane's screen and modes and, with `pipe_command`,
/// re-arms its pipe at that very instant (`display-message`, `pipe-pane`, `capture-pane`).
pub fn seed_command(
    pane: &PaneId,
    pipe_command: Option<&str>,
) -> Result<CommandList, UnsafeArgument> {
    let mut list = CommandList::new()
        .command("display-message")
        .arg("-p")?
        .arg("-t")?
        .arg(pane.as_str())?
        .arg(SEED_FORMAT)?;
    if let Some(pipe_command) = pipe_command {
        list = list.then(tmux::pipe_pane(pane, pipe_command)?);
    }
    Ok(list.then(tmux::capture_pane(pane)?))
}

/// A pane's screen and modes, ready to feed to a fresh emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Pane width.
    pub cols: u16,
    /// Pane height.
    pub rows: u16,
    /// Escape sequences recreating the screen.
    pub bytes: Vec<u8>,
}

/// Parses the output of [`seed_command`].
pub fn parse_seed(output: &str) -> Option<Seed> {
    let mut lines = output.split('\n');
    let fields: Vec<&str> = lines.next()?.split('\t').collect();
    if fields.len() < 14 {
        return None;
    }
    let num = |i: usize| fields[i].trim().parse::<u16>().ok();
    let flag = |i: usize| fields.get(i).is_some_and(|f| f.trim() == "1");
    let (cols, rows) = (num(0)?, num(1)?);
    let (cursor_x, cursor_y) = (num(2)?, num(3)?);
    let mut out = String::from("\x1bc");
    if flag(5) {
        out.push_str("\x1b[?1049h");
    }
    for (row, line) in lines.take(rows as usize).enumerate() {
        out.push_str(&format!(
            "\x1b[{};1H{}\x1b[0m",
            row + 1,
            line.trim_end_matches('\r')
        ));
    }
    if let (Some(top), Some(bottom)) = (num(12), num(13))
        && (top != 0 || bottom + 1 != rows)
    {
        out.push_str(&format!("\x1b[{};{}r", top + 1, bottom + 1));
    }
    if flag(6) {
        out.push_str("\x1b=");
    }
    if flag(7) {
        out.push_str("\x1b[?1h");
    }
    if flag(10) {
        out.push_str("\x1b[?1003h");
    } else if flag(9) {
        out.push_str("\x1b[?1002h");
    } else if flag(8) {
        out.push_str("\x1b[?1000h");
    }
    if flag(11) {
        out.push_str("\x1b[?1006h");
    }
    if flag(14) {
        out.push_str("\x1b[?2004h");
    }
    if !flag(4) {
        out.push_str("\x1b[?25l");
    }
    out.push_str(&format!("\x1b[{};{}H", cursor_y + 1, cursor_x + 1));
    Some(Seed {
        cols,
        rows,
        bytes: out.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_recreates_screen_cursor_and_modes() {
        let output = "40\t5\t3\t1\t1\t0\t0\t1\t0\t0\t0\t0\t0\t4\t1\n\
                      \x1b[31mred\x1b[0m line\n$ ls\n\n\n\n";
        let seed = parse_seed(output).unwrap();
        assert_eq!((seed.cols, seed.rows), (40, 5));
        let mut parser = vt100::Parser::new(
            std::num::NonZeroU16::new(5).unwrap(),
            std::num::NonZeroU16::new(40).unwrap(),
            0,
        );
        parser.process(&seed.bytes);
        let screen = parser.screen();
        assert_eq!(screen.contents(), "red line\n$ ls");
        assert_eq!(screen.cursor_position(), (1, 3));
        assert!(screen.bracketed_paste());
        assert!(screen.application_cursor());
        assert_eq!(screen.cell(0, 0).unwrap().fgcolor(), vt100::Color::Idx(1));
        assert!(parse_seed("garbage").is_none());
    }

    #[test]
    fn rearm_is_one_command_list() {
        let pane = PaneId::parse("%4").unwrap();
        assert_eq!(seed_command(&pane, Some("exec helper")).unwrap().len(), 3);
        assert_eq!(seed_command(&pane, None).unwrap().len(), 2);
    }
}
