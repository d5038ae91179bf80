"""Loads the modules generated from shop's protos (see generate.py) and finds event classes.

Events arrive with their full protobuf name in the AMQP `type` property, so a consumer needs a
map from that name to a generated class. The generated modules register every message in the
default descriptor pool when imported; this module imports them all once and looks names up
there, and reads each event's routing key from the `(shop.events.v1.routing_key)` option.
"""

import importlib
import pathlib
import sys

GEN = pathlib.Path(__file__).resolve().parent / "gen"
if not (GEN / "shop").is_dir():
    sys.exit(f"{GEN} is missing: run `python generate.py` first (see examples/README.md)")
sys.path.insert(0, str(GEN))

from google.protobuf import descriptor_pool, message_factory  # noqa: E402

MODULES = {
    ".".join(path.relative_to(GEN).with_suffix("").parts): importlib.import_module(
        ".".join(path.relative_to(GEN).with_suffix("").parts)
    )
    for path in sorted(GEN.rglob("*_pb2.py"))
}

from shop.events.v1 import options_pb2  # noqa: E402


def message_class(type_name: str):
    """The generated class of the message called `type_name`, or None if it is unknown."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return None
    return message_factory.GetMessageClass(descriptor)


def routing_keys() -> dict:
    """Every event type this build knows, with its routing key: {full name: routing key}."""
    keys = {}
    for module in MODULES.values():
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            options = descriptor.GetOptions()
            if options.HasExtension(options_pb2.routing_key):
                keys[descriptor.full_name] = options.Extensions[options_pb2.routing_key]
    return keys
