#!/usr/bin/env bash
# Generates the Python protobuf and gRPC stubs of the shadowcopy protocol from the repository's
# .proto files, with grpc_tools.protoc from the grpcio-tools package.
#   examples/python-writer/generate.sh OUT_DIR
# OUT_DIR receives the package shadowcopy/v1/*_pb2.py and *_pb2_grpc.py; pass it to writer.py as
# --stubs OUT_DIR. The stubs are build output: generate them, never commit them.
# PYTHON names the interpreter that has grpcio-tools (default: python3). The .proto files come from
# the source tree, or from /usr/share/shadowcopy/proto where the Debian package put them
# (SHADOWCOPY_PROTO_DIR names another directory).
set -euo pipefail

if (($# != 1)); then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out="$1"
# The .proto files: SHADOWCOPY_PROTO_DIR, else the source tree's, else the Debian package's.
proto_root="${SHADOWCOPY_PROTO_DIR:-}"
if [[ -z "$proto_root" ]]; then
    proto_root="$(dirname "$0")/../../crates/protocol/proto"
    [[ -d "$proto_root" ]] || proto_root=/usr/share/shadowcopy/proto
fi
if [[ ! -f "$proto_root/shadowcopy/v1/writer.proto" ]]; then
    echo "$0: no shadowcopy/v1/writer.proto under $proto_root; set SHADOWCOPY_PROTO_DIR to the" \
        "directory that holds shadowcopy/v1/*.proto" >&2
    exit 1
fi
proto_root="$(cd "$proto_root" && pwd)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$proto_root"
"${PYTHON:-python3}" -m grpc_tools.protoc -I . \
    --python_out="$out" --grpc_python_out="$out" shadowcopy/v1/*.proto
