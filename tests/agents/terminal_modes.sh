#!/bin/sh
# Fake agent that reaches beyond its screen once it is given a line (so that a viewer gets
# the sequences as output, not in a screen snapshot): sets the clipboard (OSC 52) and the
# title, pushes the kitty keyboard protocol, turns on focus reporting, bracketed paste,
# mouse reporting, application cursor keys and keypad, hides the cursor and shifts to the
# DEC graphics character set; then echoes what it is given.
echo "modes agent ready"
read -r _
printf '\033]52;c;c3RvbGVu\007\033]2;agent-title\007\033[>1u\033[?1004h\033[?2004h\033[?1000;1006h\033[?1h\033=\033[?25l'
echo "modes set"
printf '\033)0\016'
exec cat
