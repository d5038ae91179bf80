"""Generates the Python protobuf and gRPC modules from shop's `proto/` into `gen/`.

Nothing generated is committed: run this after installing requirements.txt, and again
whenever the protos change. The contract lives in one place, `proto/` at the repository root.
"""

import os
import pathlib
import shutil
import sys

import grpc_tools
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = (HERE / ".." / ".." / "proto").resolve()
OUT = HERE / "gen"
# descriptor.proto and timestamp.proto ship inside grpcio-tools.
WELL_KNOWN = pathlib.Path(grpc_tools.__file__).parent / "_proto"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        print(f"generate.py: no .proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={WELL_KNOWN}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"generate.py: protoc failed with exit code {code}", file=sys.stderr)
        return code
    print(f"generated {len(protos)} proto files from {PROTO_ROOT} into {os.path.relpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
