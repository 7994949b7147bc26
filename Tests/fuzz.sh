#!/usr/bin/env bash
# Builds replication-fuzz with libFuzzer and AddressSanitizer and runs every target for a bounded time,
# starting from the committed seed corpus. Exits non-zero when any target finds a crash or a failed
# check; the input that caused it is kept in .build-fuzz/fuzz-crashes/TARGET/ (replay it with
# `swift run replication-fuzz TARGET FILE`, then make it a regression test).
#
#   bash Tests/fuzz.sh [SECONDS_PER_TARGET]      (default 45)
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-45}"
scratch=".build-fuzz"

swift build --scratch-path "$scratch" --product replication-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld || exit 1
fuzzer="$(swift build --scratch-path "$scratch" --show-bin-path)/replication-fuzz"

# Swift's own backtracer would fight AddressSanitizer over a crash: leave the report to ASan.
export SWIFT_BACKTRACE=enable=no
failed=0
for target in framer codec json writer-row session bus resp certificate; do
    # libFuzzer adds what it finds to the first corpus directory: a scratch copy, not the committed seeds.
    corpus="$scratch/fuzz-corpus/$target"
    crashes="$scratch/fuzz-crashes/$target"
    mkdir -p "$corpus" "$crashes"
    if "$fuzzer" "$target" "$corpus" "Tests/Fuzz/corpus/$target" -dict=Tests/Fuzz/protocol.dict \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$crashes/" -print_final_stats=1 >"$scratch/fuzz-$target.log" 2>&1; then
        echo "fuzz $target: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/fuzz-$target.log" |
            grep -o '[0-9]*$') inputs in ${seconds}s, no crash"
    else
        echo "fuzz $target: FAILED, input kept in $crashes:"
        grep -E -m 8 "Fatal error|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY|Test unit written|^    #[0-9] " \
            "$scratch/fuzz-$target.log"
        failed=1
    fi
done
exit "$failed"
