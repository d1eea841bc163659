#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...]: builds the libFuzzer targets (fuzz/fuzz_<parser>.c:
# idx, npy, safetensors, checkpoint, onnx, onnx_import, tokens, spec) with clang, AddressSanitizer and UBSan, and runs each for
# SECONDS (default 60) on 1 job, starting from fuzz/corpus/<parser>/ (the grown corpus is kept
# in build-fuzz/corpus/<parser>/, not in the repository). A crash leaves its input in
# build-fuzz/crashes/<parser>/; copy it to tests/regress/<parser>/ once fixed (the normal
# ctest replays that folder). Prints executions and time per target (docs/reliability.md).
# Not part of scripts/test.sh: on demand only. Installs clang and libclang-rt-14-dev (Debian)
# if they are missing, and protobuf-c and ONNX's schema, which the onnx target needs (its reader
# is generated here with protoc-c, as CMake does, into build-fuzz/gen/; libprotobuf-c itself is
# Debian's build, not instrumented, so coverage counts this project's code only). onnx_import
# (the importer, dp_model_load_onnx, and the engine driving what it loads) and spec (the
# model-spec parser, dp_model_create_named, and the engine on what it builds) link the whole
# library, built here the same way (every src/**/*.c, once per run), with OpenBLAS's OpenMP
# build, FFTW3, libcrypto and OpenMP (clang's libomp), as CMakeLists.txt links it; they run with
# OMP_NUM_THREADS=1. tokens (the token loader, dp_dataset_load_tokens) needs only the parsers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(idx npy safetensors checkpoint onnx onnx_import tokens spec)

need=()
command -v clang >/dev/null || need+=(clang)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null || need+=(libclang-rt-14-dev)
command -v protoc-c >/dev/null || need+=(protobuf-c-compiler)
[[ -f /usr/include/protobuf-c/protobuf-c.h ]] || need+=(libprotobuf-c-dev)
[[ -f /usr/include/onnx/onnx.proto ]] || need+=(libonnx-dev)
if [[ " ${TARGETS[*]} " == *" onnx_import "* || " ${TARGETS[*]} " == *" spec "* ]]; then # the whole library: BLAS, FFTW3, libcrypto, OpenMP
    [[ -f /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h ]] || need+=(libopenblas-openmp-dev)
    [[ -f /usr/include/fftw3.h ]] || need+=(libfftw3-dev)
    [[ -f /usr/include/openssl/evp.h ]] || need+=(libssl-dev)
    compgen -G "/usr/lib/llvm-*/lib/libomp.so" >/dev/null || need+=(libomp-dev)
fi
if [[ ${#need[@]} -gt 0 ]]; then
    SUDO=()
    [[ $(id -u) -eq 0 ]] || SUDO=(sudo -n)
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

OUT=${FUZZ_OUT:-build-fuzz} # FUZZ_OUT=DIR: another build folder (several fuzzing at once)
mkdir -p "$OUT/gen"
protoc-c --c_out="$OUT/gen" --proto_path=/usr/include/onnx /usr/include/onnx/onnx.proto
# The parsers and what they need: no model, BLAS or OpenMP.
SRCS=(src/core/core.c src/io/npy.c src/io/idx.c src/io/dataset.c src/io/tokens.c src/io/safetensors.c src/io/checkpoint.c
      src/io/onnx.c src/io/onnx_wire.c src/io/onnx_tensor.c src/io/onnx_write.c src/io/file.c "$OUT/gen/onnx.pb-c.c")
CFLAGS=(-std=c17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -Iinclude -Isrc -I"$OUT/gen" -Wall -Wextra -Wno-unused-parameter)
# onnx_import and spec: every source of the library (CMakeLists.txt's DP_SOURCES), the kernels with
# -fno-trapping-math as there, linked as CMakeLists.txt's DP_LINK (OpenBLAS's OpenMP build).
ARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
BLAS_INC=/usr/include/$ARCH/openblas-openmp BLAS_LIB=/usr/lib/$ARCH/openblas-openmp
mapfile -t LIB_SRCS < <(find src -name '*.c' | LC_ALL=C sort)
lib_built=0
build_lib() { # objects of the whole library into $OUT/lib/ (rebuilt once each run: about a minute on 2 cores)
    [[ $lib_built == 1 ]] && return
    lib_built=1
    rm -rf "$OUT/lib" && mkdir -p "$OUT/lib"
    local s extra pids=()
    for s in "${LIB_SRCS[@]}" "$OUT/gen/onnx.pb-c.c"; do
        extra=()
        [[ $s == src/nn/kernels/kernels_f32.c ]] && extra=(-fno-trapping-math)
        # quiet: `omp simd` loops the sanitizers keep from vectorising, and onnx_sym.c's
        # deliberate non-short-circuit | of overflow checks
        clang "${CFLAGS[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" -fopenmp -I"$BLAS_INC" "${extra[@]}" \
            -Wno-pass-failed -Wno-bitwise-instead-of-logical \
            -c "$s" -o "$OUT/lib/$(echo "${s#"$OUT/"}" | tr / _).o" &
        pids+=($!)
        if [[ ${#pids[@]} -ge $(nproc) ]]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    done
    for s in "${pids[@]}"; do wait "$s"; done
}
for t in "${TARGETS[@]}"; do
    if [[ $t == onnx_import || $t == spec ]]; then
        build_lib
        clang "${CFLAGS[@]}" -fopenmp "fuzz/fuzz_$t.c" "$OUT"/lib/*.o -L"$BLAS_LIB" -Wl,-rpath,"$BLAS_LIB" -lopenblas \
            -lfftw3 -lfftw3f -lprotobuf-c -lcrypto -lz -lm -o "$OUT/fuzz_$t"
        continue
    fi
    clang "${CFLAGS[@]}" "fuzz/fuzz_$t.c" "${SRCS[@]}" -lprotobuf-c -lz -lm -o "$OUT/fuzz_$t"
done
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export OMP_NUM_THREADS=1 # onnx_import, spec: one thread (the target runs one input at a time)
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$OUT/corpus/$t" "$OUT/crashes/$t"
    cp -n fuzz/corpus/"$t"/* "$OUT/corpus/$t/" 2>/dev/null || true
    log="$OUT/fuzz_$t.log"
    t0=$EPOCHREALTIME
    if ! "$OUT/fuzz_$t" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$OUT/crashes/$t/" "$OUT/corpus/$t" >"$log" 2>&1; then
        echo "fuzz.sh: $t: CRASH, see $log and $OUT/crashes/$t/" >&2
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
    awk -v t="$t" -v e="$execs" -v c="$cov" -v n="$(ls "$OUT/corpus/$t" | wc -l)" -v a="$t0" -v b="$EPOCHREALTIME" \
        'BEGIN { printf "fuzz.sh: %-12s %10s executions in %6.0f s, coverage %s, corpus %d files\n", t, e, b - a, c, n }'
done
exit $status
