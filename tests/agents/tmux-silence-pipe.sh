#!/bin/sh
# A tmux stand-in that runs the real tmux, except that while a file named `silence-next-pipe`
# sits next to the server socket, the next `pipe-pane` it passes on runs silent_pipe.py in
# front of the daemon's helper: the daemon gets a pipe that stays open but never delivers
# anything, until tmux closes the pane's real pipe. The file is used up by that command.
if [ "$1" = "-S" ]; then
    flag="$(dirname "$2")/silence-next-pipe"
    if [ -e "$flag" ]; then
        case "$*" in
        *pipe-attach*)
            rm -f "$flag"
            helper="$(dirname "$0")/silent_pipe.py"
            started=
            for arg; do
                if [ -z "$started" ]; then
                    set --
                    started=1
                fi
                case $arg in
                "exec "*pipe-attach*) arg="exec '$helper' ${arg#exec }" ;;
                esac
                set -- "$@" "$arg"
            done
            ;;
        esac
    fi
fi
exec tmux "$@"
