#!/bin/sh
# Fake headless agent for delegated tasks, run as `task_agent.sh` with the prompt on its
# standard input (the test config's form) or as `task_agent.sh "{prompt}"`.
#
# It acts on the lines of its prompt that start with a keyword, top to bottom, and
# ignores every other line (the daemon adds "Files:", "Requirements:" and test lines):
#
#   WRITE <file> <text>    write <text> and a newline to <file> (creating its directory)
#   APPEND <file> <text>   append <text> and a newline to <file>
#   RM <file>              delete <file>
#   TOUCH <file>           create <file> if missing (a marker for the test)
#   WAITFOR <file>         block until <file> exists (holds the task running)
#   PIDFILE <file>         write this shell's pid (HANG keeps it: it execs) to <file>
#   PROMPT <file>          copy the whole prompt to <file>
#   ENV <file>             write ORCHESTRA_TICKET_ID and ORCHESTRA_SESSION_ID to <file>
#   SAY <text>             print <text>
#   ANSWER <text>          use <text> in the final answer (default "ok")
#   FLOOD <n>              print <n> numbered lines (default 50000)
#   JSON <text>            at the end print only {"type":"result","result":"<text>"}
#   FAIL                   exit 3 now
#   CRASH                  kill this shell with SIGKILL now
#   HANG                   become `sleep 100000` now (same pid)
#
# Paths are used as given: relative ones are in the task's working directory. The text
# arguments must not contain quotes or backslashes (JSON) and are printed verbatim.
# When it gets to the end it prints "final answer: done <answer>" and exits 0.
set -f
if [ $# -gt 0 ]; then
    prompt=$1
else
    prompt=$(cat)
fi
answer=ok
json=
while IFS= read -r line; do
    word=${line%% *}
    rest=
    case $line in
        *" "*) rest=${line#* } ;;
    esac
    case $word in
        WRITE | APPEND)
            file=${rest%% *}
            text=
            case $rest in
                *" "*) text=${rest#* } ;;
            esac
            case $file in
                */*) mkdir -p "${file%/*}" ;;
            esac
            if [ "$word" = WRITE ]; then
                printf '%s\n' "$text" >"$file"
            else
                printf '%s\n' "$text" >>"$file"
            fi
            echo "wrote $file"
            ;;
        RM) rm -f "$rest" ;;
        TOUCH) : >>"$rest" ;;
        WAITFOR)
            echo "waiting for $rest"
            while [ ! -e "$rest" ]; do sleep 0.05; done
            echo "released"
            ;;
        PIDFILE) echo $$ >"$rest" ;;
        PROMPT) printf '%s\n' "$prompt" >"$rest" ;;
        ENV)
            printf 'ORCHESTRA_TICKET_ID=%s\nORCHESTRA_SESSION_ID=%s\n' \
                "${ORCHESTRA_TICKET_ID-unset}" "${ORCHESTRA_SESSION_ID-unset}" >"$rest"
            ;;
        SAY) printf '%s\n' "$rest" ;;
        ANSWER) answer=$rest ;;
        FLOOD) seq 1 "${rest:-50000}" | sed 's/$/ flooding the output with a line of text/' ;;
        JSON) json=$rest ;;
        FAIL)
            echo "failing on purpose" >&2
            exit 3
            ;;
        CRASH)
            echo "about to crash"
            kill -KILL $$
            ;;
        HANG) exec sleep 100000 ;;
    esac
done <<EOF
$prompt
EOF
if [ -n "$json" ]; then
    printf '{"type":"result","subtype":"success","is_error":false,"result":"%s"}\n' "$json"
    exit 0
fi
echo "final answer: done $answer"
exit 0
