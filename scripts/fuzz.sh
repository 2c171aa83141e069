#!/usr/bin/env bash
# `make fuzz`: AFL++ through cargo-afl (stable Rust) on the targets of fuzz/, each for FUZZ_SECS
# seconds (one after the other, or at once with FUZZ_PARALLEL=1). A campaign resumes where the last one stopped (fuzz/out/).
# Crashes and hangs are copied to fuzz/findings/<target>/; the run fails when there are any.
#
#   FUZZ_SECS=600                  seconds per target
#   FUZZ_TARGETS="decode_file scp_association pdu_stream"
#   FUZZ_NICE=0                    niceness of the build and the fuzzers
#   FUZZ_PARALLEL=0                1: all targets at once
#   FUZZ_CMIN=1                    minimise the file seeds with afl-cmin first
#   FUZZ_CARGO_TARGET_DIR=fuzz/target
#   FUZZ_OUT=fuzz/out  FUZZ_FINDINGS=fuzz/findings
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${FUZZ_SECS:-600}
targets=${FUZZ_TARGETS:-decode_file scp_association pdu_stream}
nice_=(nice -n "${FUZZ_NICE:-0}")
out=${FUZZ_OUT:-$root/fuzz/out}
findings=${FUZZ_FINDINGS:-$root/fuzz/findings}
export CARGO_TARGET_DIR=${FUZZ_CARGO_TARGET_DIR:-$root/fuzz/target}
bin=$CARGO_TARGET_DIR/release

# cargo-afl from crates.io; it carries AFL++'s sources and builds them once per rustc.
command -v cargo-afl >/dev/null || "${nice_[@]}" cargo install --locked cargo-afl
if ! cargo afl config --build >/tmp/plateqc-afl-config.log 2>&1 \
    && ! grep -q "already built" /tmp/plateqc-afl-config.log; then
    cat /tmp/plateqc-afl-config.log >&2
    exit 1
fi
(cd fuzz && "${nice_[@]}" cargo afl build --release --locked)

# Seeds: a spread of transfer syntaxes from tests/fixtures (AFL takes files up to 1 MB), the
# hostile files and two tiny plates for decode_file; whole associations for the network.
seeds=$out/seeds
rm -rf "$seeds"
"$bin/make_seeds" "$seeds"
find tests/fixtures -name '*.dcm' -size -1024k -exec cp {} "$seeds/decode/" \;
cp tests/hostile/*.dcm "$seeds/decode/"

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_AUTORESUME=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1

# The file seeds minimised to those that reach distinct paths (seconds), with AFL++'s shell
# afl-cmin: its Python variant finds no tuples for this persistent-mode target.
if [ "${FUZZ_CMIN:-1}" = 1 ]; then
    cmin=$(find "${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs" -path '*/afl/bin/afl-cmin.bash' | head -1)
    if [ -n "$cmin" ]; then
        AFL_PATH=$(dirname "$cmin") PATH=$(dirname "$cmin"):$PATH "${nice_[@]}" "$cmin" \
            -i "$seeds/decode" -o "$seeds/decode.min" -m 4096 -t 3000 -- "$bin/decode_file" \
            >"$out/cmin.log" 2>&1 || true
    fi
    if compgen -G "$seeds/decode.min/*" >/dev/null; then
        mv "$seeds/decode" "$seeds/decode.all" && mv "$seeds/decode.min" "$seeds/decode"
    fi
fi
mkdir -p "$findings"
run() {
    local t=$1 input dict limits
    case $t in
        # -m: the decode worker's address space (decode.worker_memory_mb); -t in ms.
        decode_file) input=$seeds/decode dict=fuzz/dict/dicom.dict limits=(-m 4096 -t 3000) ;;
        scp_association) input=$seeds/net dict=fuzz/dict/net.dict limits=(-t 2000) ;;
        pdu_stream) input=$seeds/net dict=fuzz/dict/net.dict limits=(-t 1000) ;;
        *) echo "fuzz: no target $t" >&2; return 2 ;;
    esac
    echo "fuzz: $t for ${secs}s" >&2
    "${nice_[@]}" cargo afl fuzz -V "$secs" -i "$input" -o "$out/$t" -x "$dict" "${limits[@]}" \
        -- "$bin/$t" >"$out/$t.log" 2>&1 &
    local fuzzer=$! cpu
    cpu=$(scripts/cpu-of-tree.py "$fuzzer")
    wait "$fuzzer" || { tail -30 "$out/$t.log" >&2; return 1; }
    local stats=$out/$t/default/fuzzer_stats
    stat() { sed -n "s/^$1 *: //p" "$stats"; }
    echo "fuzz: $t: cpu ${cpu}s, run $(stat run_time)s, execs $(stat execs_done)," \
        "corpus $(stat corpus_count), crashes $(stat saved_crashes), hangs $(stat saved_hangs)" |
        tee -a "$out/summary.log" >&2
    for kind in crashes hangs; do
        for f in "$out/$t/default/$kind"/id:*; do
            [ -e "$f" ] || continue
            # AFL's time limit is wall-clock: on a busy machine an input can overrun it without
            # being slow. A hang counts when it still needs 3 x -t alone.
            if [ "$kind" = hangs ] && timeout "$((3 * limits[-1] / 1000))" "$bin/$t" <"$f" >/dev/null 2>&1; then
                echo "fuzz: $t: ${f##*/} not a hang when run alone" >>"$out/summary.log"
                continue
            fi
            mkdir -p "$findings/$t/$kind"
            cp -n "$f" "$findings/$t/$kind/"
        done
    done
}
# FUZZ_PARALLEL=1 runs the targets at once (one core each), otherwise one after the other.
status=0
if [ "${FUZZ_PARALLEL:-0}" = 1 ]; then
    pids=()
    for t in $targets; do run "$t" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || status=1; done
else
    for t in $targets; do run "$t" || status=1; done
fi
# The inboxes of scp_association's processes that have ended.
for d in /dev/shm/plateqc-fuzz-scp-* "${TMPDIR:-/tmp}"/plateqc-fuzz-scp-*; do
    [ -e "$d" ] && [ ! -e "/proc/${d##*-}" ] && rm -rf "$d"
done
[ "$status" = 0 ] || exit 1
found=$(find "$findings" -type f 2>/dev/null | wc -l)
if [ "$found" -gt 0 ]; then
    echo "fuzz: $found findings in $findings" >&2
    exit 1
fi
