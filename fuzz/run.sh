#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain and fuzzes
# decode_batch for $1 seconds (default 60). `cargo fuzz run decode_batch` does the same on nightly, with
# AddressSanitizer. Findings land in fuzz/artifacts/, the corpus in fuzz/corpus/ (both ignored by git).
set -euo pipefail
cd "$(dirname "$0")"
host=$(rustc -vV | sed -n 's/host: //p')
# --target keeps the instrumentation out of build scripts, as cargo-fuzz does.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --locked --target "$host" --bin decode_batch
mkdir -p corpus/decode_batch artifacts/decode_batch
"target/$host/release/decode_batch" -max_total_time="${1:-60}" -rss_limit_mb=2048 \
  -artifact_prefix=artifacts/decode_batch/ corpus/decode_batch
