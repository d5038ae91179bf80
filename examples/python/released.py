"""Decodes one event body with a released contract, as a consumer built from that release would.

shop keeps the descriptor set of its last released contract in proto/compat/<version>.binpb.
This reads a binary protobuf body on standard input and prints it as JSON, decoded with the
message type of that descriptor set instead of the code generated from today's protos: fields
added since the release are skipped (protobuf keeps them as unknown fields), everything else
reads as it did. It is how to check, from Python, that a new field breaks no old consumer.

    python released.py --type shop.user.v1.UserCreated < body.bin
    python released.py --type shop.user.v1.UserCreated --descriptors ../../proto/compat/v0.1.0.binpb < body.bin
"""

import argparse
import json
import pathlib
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

COMPAT = pathlib.Path(__file__).resolve().parents[2] / "proto" / "compat"


def newest_release() -> pathlib.Path:
    """The descriptor set of the newest release in proto/compat/ (by version)."""
    def version(path: pathlib.Path):
        return tuple(int(part) for part in path.stem.lstrip("v").split("."))
    releases = sorted(COMPAT.glob("v*.binpb"), key=version)
    if not releases:
        sys.exit(f"no released descriptor set in {COMPAT}")
    return releases[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--type", required=True, help="the full protobuf name, e.g. shop.user.v1.UserCreated")
    parser.add_argument(
        "--descriptors",
        type=pathlib.Path,
        default=None,
        help="a descriptor set made by `buf build -o` (default: the newest in proto/compat/)",
    )
    args = parser.parse_args()
    path = args.descriptors or newest_release()
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    try:
        descriptor = pool.FindMessageTypeByName(args.type)
    except KeyError:
        print(f"{args.type} is not in {path.name}", file=sys.stderr)
        return 1
    event = message_factory.GetMessageClass(descriptor).FromString(sys.stdin.buffer.read())
    print(json.dumps({"release": path.stem, "type": args.type, "event": json_format.MessageToDict(event)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
