#!/bin/sh
# Fake agent that leaves terminal state a plain text capture would lose: red text, the cursor
# moved to row 5, column 10, bracketed paste and mouse reporting enabled. It prints `ready`
# there (so the cursor ends at row 5, column 15), then echoes every line it is given.
printf '\033[31mRED\033[0m\033[5;10H\033[?2004h\033[?1000hready'
exec cat
