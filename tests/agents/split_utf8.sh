#!/bin/sh
# Fake agent that writes a multi-byte character in two separate writes once it reads a line.
read -r _
printf 'before \303'
sleep 0.3
printf '\251 after\n'
exec cat
