#!/usr/bin/env bash
# Runs the command sequence of docs/cli.md and prints it as transcripts ("$ command", its
# output, "[exit status N]" when not 0), in the order of the document, with the background
# processes the text describes (a `top` holding `frames` open, a shell loop reading it, a
# program holding its lock, a second `top` on `thumbs`). Compare the output with
# docs/cli.md and paste what changed; pids, times and rates differ from run to run.
#
#   cargo build --release --features cli --bin shmstore --example hold_lock
#   bash docs/cli-transcript.sh > /tmp/cli-transcript.txt
#
# It uses the store names of the document (frames, thumbs, scratch, tmp, halfmade, junk) and
# refuses to run if any of them exists; everything it creates is destroyed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${SHMSTORE_BIN:-target/release/shmstore}
HOLD=${HOLD_LOCK_BIN:-target/release/examples/hold_lock}
for b in "$BIN" "$HOLD"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release --features cli --bin shmstore --example hold_lock" >&2; exit 2; }
done
for n in frames thumbs scratch tmp halfmade junk bad; do
    if [ -e "/dev/shm/shmstore.$n" ]; then
        echo "/dev/shm/shmstore.$n exists: this script would change it; destroy it first" >&2
        exit 2
    fi
done
# The document runs a bare `shmstore gc`, which removes every store of this user that no
# live process has open: only on a machine where no other store exists.
others=$(ls /dev/shm 2>/dev/null | grep '^shmstore\.' || true)
if [ -n "$others" ]; then
    echo "other stores exist in /dev/shm (the transcript's \`shmstore gc\` could remove them):" >&2
    echo "$others" >&2
    exit 2
fi
shmstore() { "$BIN" "$@"; }
export -f shmstore 2>/dev/null || true
export BIN

bg=()
cleanup() {
    for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    for n in frames thumbs scratch tmp halfmade junk; do "$BIN" destroy "$n" >/dev/null 2>&1; done
    rm -f /dev/shm/shmstore.junk /dev/shm/shmstore.halfmade
}
trap cleanup EXIT

# One transcript entry: the command as typed, its output (stdout and stderr), the status.
run() {
    echo "\$ $1"
    local out rc
    out=$(bash -c "shmstore() { \"\$BIN\" \"\$@\"; }; $1" 2>&1)
    rc=$?
    [ -n "$out" ] && printf '%s\n' "$out"
    [ "$rc" -ne 0 ] && echo "[exit status $rc]"
    echo
}
section() { echo "==== $1"; }

section create
run "shmstore create frames --capacity 1GiB"
run "shmstore create thumbs --capacity 64MiB --policy strict --min-free 0.1 --group"
run "shmstore --format json create scratch --capacity 1000000"
run "shmstore create frames --capacity 1GiB"
run "shmstore create bad --capacity 12parsecs"
run "shmstore create bad --capacity 1GiB --policy lru"
run "shmstore create bad --capacity 1GiB --min-free 2"

section put
run "printf 'hello, world' | shmstore put frames greeting"
run "head -c 300000 /dev/urandom | shmstore put frames img/0001"
run "head -c 200000 /dev/urandom | shmstore put frames img/0002"
run "head -c 200000 /dev/urandom | shmstore --format json put frames img/0003"
run "head -c 50000 /dev/urandom | shmstore put thumbs t/0001"

section get
run "shmstore get frames greeting"
run "shmstore get frames greeting --hex"
run "shmstore --format json get frames greeting"
run "shmstore get frames img/0001 | wc -c"
run "shmstore get frames nope"

section keys
run "shmstore keys frames"
run "shmstore keys frames --prefix img/"
run "shmstore --format json keys frames"

section rm
run "shmstore rm frames img/0002"
run "shmstore rm frames img/0002"
run "shmstore --format json rm frames greeting"

section ls
printf 'not a store' > /dev/shm/shmstore.junk
"$BIN" top frames --iterations 1000000 >/dev/null 2>&1 &
top_frames=$!
bg+=("$top_frames")
sleep 1
run "shmstore ls"
run "shmstore --format json ls --prefix th"

section stat
( for _ in $(seq 20); do "$BIN" get frames img/0001 >/dev/null; "$BIN" get frames nope 2>/dev/null; done )
run "shmstore stat frames"
run "shmstore stat frames --format json"
"$HOLD" frames img/0001 4 >/dev/null &
bg+=("$!")
sleep 1.5
run "shmstore stat frames | grep -E '^(lock|check|fragmentation|processes)'"
run "shmstore --format json stat frames | grep -A4 -E '\"(lock|check)\"'"
wait "${bg[-1]}" 2>/dev/null

section top
( while :; do "$BIN" get frames img/0001 >/dev/null; "$BIN" get frames nope 2>/dev/null; done ) &
bg+=("$!")
run "shmstore top frames --iterations 3"
run "shmstore top frames --iterations 2 --format json"
kill "${bg[-1]}" 2>/dev/null

section "check and repair"
run "shmstore check frames"
run "shmstore check frames --format json"
run "printf 'hello' | shmstore put scratch a"
# The first 8 KiB of the index, right after the header (ten pages).
run "python3 -c \"f=open('/dev/shm/shmstore.scratch','r+b'); f.seek(40960); f.write(b'\\xab'*8192)\""
run "shmstore check scratch"
run "shmstore repair scratch"
run "shmstore --format json check scratch"
run "shmstore get scratch a"

section errors
run "shmstore stat nosuch"
run "shmstore stat junk"
run "shmstore keys a/b"
run "head -c 40960 /dev/zero > /dev/shm/shmstore.halfmade"
run "shmstore stat halfmade"
run "shmstore destroy halfmade"

section destroy
run "shmstore create tmp --capacity 1MiB"
run "shmstore --format json destroy tmp"
run "shmstore destroy tmp"

section gc
"$BIN" top thumbs --iterations 1000000 >/dev/null 2>&1 &
bg+=("$!")
sleep 1
run "shmstore ls"
run "kill -9 $top_frames"
sleep 0.5
run "shmstore gc --dry-run"
run "shmstore --format json gc --dry-run --prefix f"
run "shmstore gc"
run "shmstore ls"
run "shmstore destroy junk"
kill "${bg[-1]}" 2>/dev/null
wait "${bg[-1]}" 2>/dev/null
run "shmstore gc"
run "shmstore ls"
