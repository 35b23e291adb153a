#!/usr/bin/env bash
# Coverage-guided fuzzing of mpchat with cargo-fuzz (libFuzzer + AddressSanitizer).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target in fuzz/fuzz_targets/ (default: line_protocol and
# hub_messages), one after the other, for SECONDS each (default 300).
# A target's corpus is fuzz/corpus/<target>, seeded with a few hand-written
# inputs on its first run and kept out of git; a crashing input is saved in
# fuzz/artifacts/<target>/. Exits 1 if any target crashed, after printing
# the path of the input. Installs cargo-fuzz if missing. cargo-fuzz needs a
# nightly compiler: the `nightly` toolchain if rustup has one, otherwise
# the stable one with RUSTC_BOOTSTRAP=1.
#
# Reproduce a crash (prints the panic and its location), then minimize it:
#   cargo +nightly fuzz run -a TARGET fuzz/artifacts/TARGET/crash-...
#   cargo +nightly fuzz tmin -a TARGET fuzz/artifacts/TARGET/crash-...
# Without nightly: RUSTC_BOOTSTRAP=1 rustup run stable cargo fuzz run -a ...
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fuzz_dir=$root/fuzz

seconds=${1:-300}
if [[ ! $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(line_protocol hub_messages)
fi
for target in "${targets[@]}"; do
    if [[ ! -f $fuzz_dir/fuzz_targets/$target.rs ]]; then
        echo "$0: no fuzz target '$target' in $fuzz_dir/fuzz_targets" >&2
        exit 2
    fi
done

if rustup toolchain list | grep -q '^nightly'; then
    cargo_fuzz=(rustup run nightly cargo fuzz)
else
    # The stable compiler takes the nightly flags (-Zsanitizer=address)
    # with RUSTC_BOOTSTRAP=1, and its sysroot has the ASan runtime.
    cargo_fuzz=(env RUSTC_BOOTSTRAP=1 rustup run stable cargo fuzz)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seed inputs for line_protocol: byte 0's low 4 bits count the split-size
# bytes after it (0: the rest is one read); a size byte with 0x80 set is
# followed by a pause, so the fragment rule fires. The rest is what a
# client sends.
seed_line_protocol() {
    local dir=$1
    printf '\x00hello, world\r\n' >"$dir/seed-plain"
    # Telnet negotiation: DO ECHO, WILL SGA, SB TTYPE ... SE, NOP, an
    # escaped 0xFF, a stray 0xFF; then CR NUL and a bare CR.
    printf '\x00\xff\xfd\x01hi\xff\xfb\x03 there\xff\xfa\x18\x00xterm\xff\xf0!\xff\xf1\xff\xff \xffx\r\x00next\rlast\n' \
        >"$dir/seed-telnet"
    # The same kind of bytes in reads of 2, 3 and 4 bytes, a pause after the 4.
    printf '\x03\x01\x02\x83a\xff\xfd\x01b\xff\xfaxx\xff\xf0c\r\x00d\r\ne' >"$dir/seed-telnet-split"
    # ANSI escapes (CSI, OSC, the one-character CSI), bidi override, TAB, C0/C1.
    printf '\x00\x1b[2J\x1b[Hhi \x1b[1;31mred\x1b[0m \x1b]0;title\x07x \x1b]8;;http://x\x1b\\link \xc2\x9b2J \xe2\x80\xaebidi\xe2\x80\xac\ttab\x07\x08\x7f \xc2\x85end\n' \
        >"$dir/seed-ansi"
    printf '\x00/whisper bob hi  there\n/w bob\n/nick Alice_1\n/rename \xc3\xa9l\xc3\xa8ve\n/me waves\n/kick bob\n/users\n/help\n/dance\n' \
        >"$dir/seed-commands"
    printf '\x00/schedule 9:05 coffee\n/schedule +30 soon\n/schedule list\n/schedule cancel 2\n/history\n/history 200\nEND\n/quit\n' \
        >"$dir/seed-schedule"
    printf '\x00alice\r\n\xc3\xa9l\xc3\xa8ve.2\r\n[server]\r\n*bob\r\nabcdefghijklmnopq\r\n' >"$dir/seed-nicks"
    # A line over 512 bytes with a 2-byte character across the cut, then a
    # fragment with no line end, in reads of 128 bytes.
    {
        printf '\x01\x7f'
        head -c 511 /dev/zero | tr '\0' x
        printf '\xc3\xa9 and more\r\nnext\r\nno line end'
    } >"$dir/seed-long"
    # 3- and 4-byte characters across the cut at every offset, one read.
    {
        printf '\x00'
        for n in 509 510 511; do
            head -c "$n" /dev/zero | tr '\0' y
            printf '\xf0\x9f\x99\x82 tail\r\n'
        done
        for n in 510 511; do
            head -c "$n" /dev/zero | tr '\0' z
            printf '\xe6\xbc\xa2 tail\n'
        done
    } >"$dir/seed-long-utf8"
}

# Seed inputs for hub_messages: datagrams from the hub, and JSON messages
# both ways.
seed_hub_messages() {
    local dir=$1
    printf '%s\n' '{"Line":"[12:00] <alice> hi"}' >"$dir/seed-line-json"
    printf '[12:00] <alice> hi\r\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n' '"Kicked"' \
        '{"Registered":{"nick":"bob","id":7}}' \
        '{"NickRefused":{"reason":"Nickname \"x y\" is not allowed."}}' \
        '{"Renamed":{"nick":"al"}}' '"Rejoined"' '"TooSlow"' '"Done"' >"$dir/seed-batch"
    printf '%s\n' '{"Login":{"nick":"alice","addr":"127.0.0.1:5000"}}' >"$dir/seed-login"
    printf '%s\n' '{"Rejoin":{"nick":"alice","addr":"[::1]:6000","id":18446744073709551615}}' \
        >"$dir/seed-rejoin"
    printf '%s\n' '{"Request":{"Whisper":{"to":"bob","text":"hi \u0000\r\n\ud83d\ude00 \"q\""}}}' \
        >"$dir/seed-whisper"
    printf '%s\n' '{"Request":{"Schedule":{"when":{"Clock":{"hour":9,"minute":5}},"text":"coffee"}}}' \
        >"$dir/seed-schedule-clock"
    printf '%s\n' '{"Request":{"Schedule":{"when":{"In":{"seconds":30}},"text":"soon"}}}' \
        >"$dir/seed-schedule-in"
    printf '%s\n' '{"Request":"Users"}' '{"Request":"ScheduleList"}' '{"Request":{"History":50}}' \
        '{"Request":{"ScheduleCancel":2}}' '{"Request":{"Say":"hi"}}' '{"Request":{"Me":"waves"}}' \
        '{"Request":{"Rename":"al"}}' '{"Request":{"Kick":"bob"}}' >"$dir/seed-requests"
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

cd "$root"
status=0
for target in "${targets[@]}"; do
    corpus=$fuzz_dir/corpus/$target
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$target"
    if [[ -z $(ls -A "$corpus") ]]; then
        case $target in
        line_protocol) seed_line_protocol "$corpus" ;;
        hub_messages) seed_hub_messages "$corpus" ;;
        esac
    fi
    log=$logs/$target.log
    echo "== fuzzing $target for ${seconds}s (corpus $corpus)"
    if "${cargo_fuzz[@]}" run --fuzz-dir "$fuzz_dir" --debug-assertions "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1 | tee "$log"; then
        echo "== $target: no crash; $(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
        echo "== $target: corpus $(find "$corpus" -type f | wc -l) inputs"
    else
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [[ -n $artifact ]]; then
            echo "== $target: CRASH; input saved to $artifact" >&2
        else
            echo "== $target: failed without saving an input (see the output above)" >&2
        fi
        status=1
    fi
done
exit "$status"
