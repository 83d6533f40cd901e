#!/bin/sh
# Stand-in for an agent CLI's one-shot mode (installed as `claude`, `droid`, `cursor-agent`
# and `aider` by the tests): records how it was called, in its working directory.
#   argv.txt    every argument, each followed by a NUL byte
#   prompt.txt  the contents of the file after `--message-file` or `--file`, when there is one
#   stdin.txt   its standard input, when that is not a terminal
: >argv.txt
prev=
for arg in "$@"; do
    printf '%s\0' "$arg" >>argv.txt
    if [ "$prev" = "--message-file" ] || [ "$prev" = "--file" ]; then
        cat -- "$arg" >prompt.txt
    fi
    prev=$arg
done
if [ ! -t 0 ]; then
    cat >stdin.txt
fi
echo "recorded $# arguments"
