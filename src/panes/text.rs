//! Terminal output as plain text, for task results, prompts and crash reports. Pure.

/// Turns terminal output into plain text: removes escape sequences (CSI, OSC, DCS and other
/// ESC sequences, and their C1 forms) and control characters other than `\n` and `\t`;
/// `\r\n` becomes `\n`, text a lone `\r` returned over is dropped (the line keeps what was
/// written after it), and a backspace erases the character before it.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut line_start = 0;
    let mut carriage_return = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        // Normalise the 7-bit ESC forms to their C1 equivalents.
        let c = match c {
            '\x1b' => match chars.peek() {
                Some(&next @ '@'..='_') => {
                    chars.next();
                    char::from_u32(next as u32 + 0x40).unwrap_or('\u{80}')
                }
                Some(' '..='/') => {
                    // nF sequence (e.g. charset selection): intermediates, then one final.
                    while chars.next_if(|c| matches!(c, ' '..='/')).is_some() {}
                    chars.next();
                    continue;
                }
                Some(_) => {
                    chars.next(); // Fp/Fs sequence such as ESC 7 or ESC c.
                    continue;
                }
                None => continue,
            },
            c => c,
        };
        match c {
            '\u{9b}' => {
                // CSI: parameters and intermediates up to one final byte.
                while chars.next_if(|c| matches!(c, ' '..='?')).is_some() {}
                chars.next_if(|c| matches!(c, '@'..='~'));
            }
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => {
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \ or C1 ST).
                while let Some(c) = chars.next() {
                    if c == '\x07' || c == '\u{9c}' {
                        break;
                    }
                    if c == '\x1b' && chars.next_if_eq(&'\\').is_some() {
                        break;
                    }
                }
            }
            '\r' => carriage_return = true,
            '\n' => {
                out.push('\n');
                line_start = out.len();
                carriage_return = false;
            }
            '\x08' if out.len() > line_start => {
                out.pop();
            }
            c if c == '\t' || !c.is_control() => {
                if carriage_return {
                    out.truncate(line_start);
                    carriage_return = false;
                }
                out.push(c);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes_and_controls() {
        let cases = [
            ("plain\ttext\n", "plain\ttext\n"),
            ("\x1b[1;31mred\x1b[0m done", "red done"),
            ("\x1b[?25l\x1b[2Khidden cursor\x1b[?25h", "hidden cursor"),
            ("\x1b]0;title\x07after", "after"),
            ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("\x1bP1$r0m\x1b\\dcs", "dcs"),
            ("\x1b(Bcharset\x1b7\x1b8", "charset"),
            ("\u{9b}32mc1\u{9b}0m", "c1"),
            ("a\r\nb\r\n", "a\nb\n"),
            ("10%\r50%\r100%\ndone", "100%\ndone"),
            ("trailing\r", "trailing"),
            ("ab\x08c", "ac"),
            ("\x08start", "start"),
            ("bell\x07 nul\0 del\x7f", "bell nul del"),
            ("unfinished \x1b[", "unfinished "),
            ("lone esc \x1b", "lone esc "),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (input, expected) in cases {
            assert_eq!(strip_ansi(input), expected, "input {input:?}");
        }
    }
}
