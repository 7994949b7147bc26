#!/usr/bin/env bash
# Every test of the project, as CI runs it: the Swift test suite, then the hardening stages (fuzzing,
# AddressSanitizer, ThreadSanitizer, soak). Runs every stage even after a failure, prints one line per
# stage, repeats the failure lines of each failed stage (so they are not lost above a long log) and
# ends with `N passed, N failed`; exits non-zero when any stage failed.
#
#   bash Tests/all.sh                 every stage
#   bash Tests/all.sh asan fuzz ...   only the named stages (tests, fuzz, asan, tsan, soak)
set -uo pipefail
cd "$(dirname "$0")/.."

stages=("$@")
((${#stages[@]})) || stages=(tests fuzz asan tsan soak)

run_stage() {  # NAME
    case "$1" in
    tests) swift test ;;
    # Each target for 45 s from the committed seeds; a crash or a failed check fails the stage.
    fuzz) bash Tests/fuzz.sh 45 ;;
    # The whole suite with AddressSanitizer, in its own build folder; the servers the tests start are
    # built with it too. LeakSanitizer is off: it reports what lives as long as the process (NIO's
    # singleton thread pools, the test runner's own objects), not leaks.
    asan) ASAN_OPTIONS=detect_leaks=0 swift test --scratch-path .build-asan --sanitize address ;;
    # The suites where threads meet (loopback fan-out, relay, metrics endpoint) with ThreadSanitizer.
    tsan) swift test --scratch-path .build-tsan --sanitize thread \
        --filter 'LoopbackServerTests|RelayTests|LoopbackMetricsTests|HTTPEndpointTests|SlowHTTPClientTests' ;;
    # 1,000 connections with churn, a writer, slow and stalled workers and scrapes for 2 minutes:
    # nothing lost, descriptors back to their baseline, memory within the log's retention budget.
    soak) swift build --product replication-sidecar && swift run replication-bench soak --connections 1000 --minutes 2 ;;
    *) echo "unknown stage '$1' (tests, fuzz, asan, tsan, soak)" >&2; return 2 ;;
    esac
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
summary=()
failures=()
for stage in "${stages[@]}"; do
    echo "=== $stage" >&2
    start=$SECONDS
    if run_stage "$stage" 2>&1 | tee "$logs/$stage"; then
        passed=$((passed + 1))
        summary+=("$stage: passed in $((SECONDS - start)) s")
    else
        failed=$((failed + 1))
        summary+=("$stage: FAILED after $((SECONDS - start)) s")
        # Swift Testing marks failures with ✘, XCTest and the compiler with "error:", libFuzzer with ==ERROR.
        failures+=("--- $stage" "$(grep -aE '✘|error:|==[0-9]+==ERROR|FAIL' "$logs/$stage" | head -40)")
    fi
done
printf '%s\n' "${failures[@]}"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
((failed == 0))
