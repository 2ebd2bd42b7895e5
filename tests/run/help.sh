#!/usr/bin/env bash
# Help for every command: `peft help`, `peft help CMD`, `peft CMD --help` and `peft CMD -h`
# exit 0 and print the command's usage, options and an example; each command's help names
# every option its parser takes. Unknown commands and arguments exit 2 and point to help.
#
# usage: help.sh PEFT
set -u
# shellcheck source=../testlib.sh
. "$(dirname "$0")/../testlib.sh"

overview=$("$PEFT" help); rc=$?
[ $rc -eq 0 ] && ok "peft help exits 0" || bad "peft help: status $rc"
commands=$(awk '/^example/ {exit} /^  [a-z][a-z-]* / {print $1}' <<<"$overview")
[ "$(wc -w <<<"$commands")" -ge 9 ] && ok "peft help lists $(wc -w <<<"$commands") commands" || bad "commands: $commands"

# The options each command's parser takes (from the source of truth a user sees: its help),
# checked against a list kept here: a new flag without help fails this test.
declare -A flags=(
    [run]="--set --resume --restart --quiet --plugin-path --stop-after"
    [compare]="--jobs --resume --plugin-path"
    [plugins]="--plugin-path"
    [check]="--plugin-path"
    [keys]=""
    [data]="--list --tasks --out --n --split --seed"
    [tokenize]="--no-special --ids --decode"
    [init-model]="--layers --seed --std"
    [eval]="--data --tasks --n --out --max-new-tokens --batch --chat-template"
    [generate]="--prompt --chat --system --chat-template --max-new-tokens --temperature --top-k --top-p --seed --quiet"
    [export]="--base-model --plugin-path"
    [import]="--plugin-path"
    [inspect]=""
    [version]=""
)
for cmd in $commands; do
    for form in "help $cmd" "$cmd --help" "$cmd -h"; do
        # shellcheck disable=SC2086
        text=$("$PEFT" $form 2>&1); rc=$?
        if [ $rc -ne 0 ]; then bad "peft $form: status $rc"; continue; fi
        grep -q "^usage: peft $cmd" <<<"$text" || { bad "peft $form: no usage line"; continue; }
        grep -q "^examples\?:" <<<"$text" || { bad "peft $form: no example"; continue; }
        grep -q -- "-h, --help" <<<"$text" || { bad "peft $form: -h not described"; continue; }
        missing=""
        for f in ${flags[$cmd]-MISSING}; do grep -q -- "  $f\b" <<<"$text" || missing="$missing $f"; done
        [ -z "$missing" ] && ok "peft $form" || bad "peft $form: options not described:$missing"
    done
done

"$PEFT" run --frobnicate x.ini 2>err.txt; rc=$?
[ $rc -eq 2 ] && grep -q "peft run --help" err.txt && ok "unexpected argument points to --help" || bad "unexpected argument: status $rc, $(cat err.txt)"
"$PEFT" comapre 2>err.txt; rc=$?
[ $rc -eq 2 ] && grep -q "did you mean 'compare'" err.txt && ok "unknown command suggests the nearest" || bad "unknown command: status $rc, $(cat err.txt)"
"$PEFT" >/dev/null 2>err.txt; rc=$?
[ $rc -eq 2 ] && grep -q "^usage: peft COMMAND" err.txt && ok "no command: usage on stderr, status 2" || bad "no command: status $rc"

finish
