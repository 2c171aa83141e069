#!/usr/bin/env bash
# `make fuzz`: AFL++ through cargo-afl (stable Rust) on the targets of fuzz/, each for FUZZ_SECS
# seconds, one after the other. A campaign resumes where the last one stopped (fuzz/out/).
# Crashes and hangs are copied to fuzz/findings/<target>/; the run fails when there are any.
#
#   FUZZ_SECS=600                  seconds per target
#   FUZZ_TARGETS="decode_file scp_association pdu_stream"
#   FUZZ_NICE=0                    niceness of the build and the fuzzers
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
ls tests/fuzz-regressions/decode/* >/dev/null 2>&1 && cp tests/fuzz-regressions/decode/* "$seeds/decode/"
ls tests/fuzz-regressions/net/* >/dev/null 2>&1 && cp tests/fuzz-regressions/net/* "$seeds/net/"

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_AUTORESUME=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1

# The file seeds minimised to those that reach distinct paths (a few seconds).
if [ "${FUZZ_CMIN:-1}" = 1 ]; then
    "${nice_[@]}" cargo afl cmin -i "$seeds/decode" -o "$seeds/decode.min" -m 4096 -t 3000 \
        -- "$bin/decode_file" >"$out/cmin.log" 2>&1 && mv "$seeds/decode" "$seeds/decode.all" \
        && mv "$seeds/decode.min" "$seeds/decode"
fi
mkdir -p "$findings"
found=0
for t in $targets; do
    case $t in
        # -m: the decode worker's address space (decode.worker_memory_mb); -t in ms.
        decode_file) input=$seeds/decode dict=fuzz/dict/dicom.dict limits=(-m 4096 -t 3000) ;;
        scp_association) input=$seeds/net dict=fuzz/dict/net.dict limits=(-t 2000) ;;
        pdu_stream) input=$seeds/net dict=fuzz/dict/net.dict limits=(-t 1000) ;;
        *) echo "fuzz: no target $t" >&2; exit 2 ;;
    esac
    echo "fuzz: $t for ${secs}s" >&2
    "${nice_[@]}" cargo afl fuzz -V "$secs" -i "$input" -o "$out/$t" -x "$dict" "${limits[@]}" \
        -- "$bin/$t" >"$out/$t.log" 2>&1 &
    fuzzer=$!
    cpu=$(scripts/cpu-of-tree.py "$fuzzer")
    wait "$fuzzer" || { tail -30 "$out/$t.log" >&2; exit 1; }
    stats=$out/$t/default/fuzzer_stats
    stat() { sed -n "s/^$1 *: //p" "$stats"; }
    echo "fuzz: $t: cpu ${cpu}s, run $(stat run_time)s, execs $(stat execs_done)," \
        "corpus $(stat corpus_count), crashes $(stat saved_crashes), hangs $(stat saved_hangs)" |
        tee -a "$out/summary.log" >&2
    for kind in crashes hangs; do
        for f in "$out/$t/default/$kind"/id:*; do
            [ -e "$f" ] || continue
            mkdir -p "$findings/$t/$kind"
            cp -n "$f" "$findings/$t/$kind/"
            found=1
        done
    done
done
if [ "$found" = 1 ]; then
    echo "fuzz: findings in $findings" >&2
    exit 1
fi
