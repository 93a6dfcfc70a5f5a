#!/bin/sh
# Prints the CMAKE_ARGS for building llama-cpp-python safely on this machine.
#
# Why not a default (GGML_NATIVE=ON) build: on Xeons with AMX, -march=native
# compiles ggml's AMX matmul, which segfaults (ggml_backend_amx_mul_mat) on the
# first decode with the SmolLM2 GGUF. So: GGML_NATIVE=OFF, AMX always off, and
# every other x86 extension switched on only when this CPU reports it, so the
# build is as fast as native here and never emits an instruction the CPU lacks.
# Override entirely with: make install LLAMA_CMAKE_ARGS="..."
set -eu

amx_off="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"

case "$(uname -m)" in
x86_64 | amd64)
    flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    has() {
        case "$flags" in
        *" $1 "*) echo ON ;;
        *) echo OFF ;;
        esac
    }
    echo "-DGGML_NATIVE=OFF" \
        "-DGGML_SSE42=$(has sse4_2)" \
        "-DGGML_AVX=$(has avx)" \
        "-DGGML_AVX2=$(has avx2)" \
        "-DGGML_BMI2=$(has bmi2)" \
        "-DGGML_FMA=$(has fma)" \
        "-DGGML_F16C=$(has f16c)" \
        "-DGGML_AVX_VNNI=$(has avx_vnni)" \
        "-DGGML_AVX512=$(has avx512f)" \
        "-DGGML_AVX512_VBMI=$(has avx512vbmi)" \
        "-DGGML_AVX512_VNNI=$(has avx512_vnni)" \
        "-DGGML_AVX512_BF16=$(has avx512_bf16)" \
        "$amx_off"
    ;;
*)
    # No AMX outside x86: the native build is safe and fastest.
    echo "-DGGML_NATIVE=ON"
    ;;
esac
