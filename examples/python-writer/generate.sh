#!/usr/bin/env bash
# Generates the Python protobuf and gRPC stubs of the shadowcopy protocol from the repository's
# .proto files, with grpc_tools.protoc from the grpcio-tools package.
#   examples/python-writer/generate.sh OUT_DIR
# OUT_DIR receives the package shadowcopy/v1/*_pb2.py and *_pb2_grpc.py; pass it to writer.py as
# --stubs OUT_DIR. The stubs are build output: generate them, never commit them.
# PYTHON names the interpreter that has grpcio-tools (default: python3).
set -euo pipefail

if (($# != 1)); then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out="$1"
proto_root="$(cd "$(dirname "$0")/../../crates/protocol/proto" && pwd)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$proto_root"
"${PYTHON:-python3}" -m grpc_tools.protoc -I . \
    --python_out="$out" --grpc_python_out="$out" shadowcopy/v1/*.proto
