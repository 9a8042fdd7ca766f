#!/bin/sh
# Removes from an image's virtual environment what serving never loads, after the environment has been checked
# against the lock (the Dockerfile runs `pip check` and deploy/serving_lock.py first):
#   - test suites that packages ship (folders named `tests`), C/Cython sources, headers and type stubs;
#   - with `cpu`: ONNX Runtime's CUDA and TensorRT execution-provider libraries (about 270 MB), which the CPU image
#     cannot use (it has no CUDA runtime); its CPU provider, the same library the tests run, stays.
#
# The byte-code caches pip wrote stay: a read-only root file system cannot write them at start, and without them
# every process of the service compiles its imports again (measured: 2-3 s more per process, /health twice as late).
#
#   deploy/trim_venv.sh /opt/venv cpu|gpu
set -eu
venv=${1:?usage: trim_venv.sh VENV cpu|gpu}
target=${2:?usage: trim_venv.sh VENV cpu|gpu}
case "$target" in cpu | gpu) ;; *) echo "trim_venv.sh: target must be cpu or gpu, not $target" >&2; exit 2 ;; esac
site=$(find "$venv/lib" -maxdepth 2 -type d -name site-packages | head -n 1)
[ -n "$site" ] || { echo "trim_venv.sh: no site-packages under $venv/lib" >&2; exit 2; }

before=$(du -sk "$venv" | cut -f1)
find "$site" -depth -type d -name tests -exec rm -rf {} +
find "$site" -type f \( -name '*.pyi' -o -name '*.h' -o -name '*.c' -o -name '*.pyx' -o -name '*.pxd' \) -delete
if [ "$target" = cpu ]; then
    rm -f "$site"/onnxruntime/capi/libonnxruntime_providers_cuda.so \
        "$site"/onnxruntime/capi/libonnxruntime_providers_tensorrt.so
fi
echo "trim_venv.sh: $venv from $((before / 1024)) MiB to $(($(du -sk "$venv" | cut -f1) / 1024)) MiB"
