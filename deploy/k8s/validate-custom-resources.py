#!/usr/bin/env python3
"""Validates the custom resources of the rendered manifests that kubernetes-validate has no
schema for: the RabbitMQ messaging topology operator's User, Permission and TopicPermission
(rabbitmq.com/v1beta1), against the fields of the operator's CRDs (strict: an unknown field
is an error, as the API server's structural schema would prune it silently), and checks that
they hold together: every User imports a Secret of the render with `username` and `password`,
every Permission and TopicPermission names a User of the render, every pattern is a valid
regular expression, and every service's AMQP secret has a User.

    python3 deploy/k8s/validate-custom-resources.py rendered.yaml
"""
import re
import sys

import jsonschema
import yaml

CLUSTER_REF = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "connectionSecret": {"type": "object"},
    },
}
NAME_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}},
}


def resource(spec):
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "rabbitmq.com/v1beta1"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": spec,
        },
    }


SCHEMAS = {
    "User": resource({
        "type": "object",
        "additionalProperties": False,
        "required": ["rabbitmqClusterReference"],
        "properties": {
            "tags": {
                "type": "array",
                "items": {"enum": ["management", "policymaker", "monitoring", "administrator"]},
            },
            "rabbitmqClusterReference": CLUSTER_REF,
            "importCredentialsSecret": NAME_REF,
        },
    }),
    "Permission": resource({
        "type": "object",
        "additionalProperties": False,
        "required": ["vhost", "permissions", "rabbitmqClusterReference"],
        "oneOf": [{"required": ["user"]}, {"required": ["userReference"]}],
        "properties": {
            "vhost": {"type": "string", "minLength": 1},
            "user": {"type": "string"},
            "userReference": NAME_REF,
            "permissions": {
                "type": "object",
                "additionalProperties": False,
                "properties": {k: {"type": "string"} for k in ("configure", "write", "read")},
            },
            "rabbitmqClusterReference": CLUSTER_REF,
        },
    }),
    "TopicPermission": resource({
        "type": "object",
        "additionalProperties": False,
        "required": ["vhost", "permissions", "rabbitmqClusterReference"],
        "oneOf": [{"required": ["user"]}, {"required": ["userReference"]}],
        "properties": {
            "vhost": {"type": "string", "minLength": 1},
            "user": {"type": "string"},
            "userReference": NAME_REF,
            "permissions": {
                "type": "object",
                "additionalProperties": False,
                "required": ["exchange"],
                "properties": {k: {"type": "string"} for k in ("exchange", "write", "read")},
            },
            "rabbitmqClusterReference": CLUSTER_REF,
        },
    }),
}


def main(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    errors = []
    checked = 0
    for kind, schema in SCHEMAS.items():
        for name, doc in by_kind.get(kind, {}).items():
            checked += 1
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
                errors.append(f"{kind}/{name}: {'.'.join(map(str, e.path))}: {e.message}")
    secrets = by_kind.get("Secret", {})
    users = by_kind.get("User", {})
    clusters = by_kind.get("RabbitmqCluster", {})
    for kind in SCHEMAS:
        for name, doc in by_kind.get(kind, {}).items():
            spec = doc.get("spec", {})
            cluster = spec.get("rabbitmqClusterReference", {}).get("name")
            if cluster not in clusters:
                errors.append(f"{kind}/{name}: no RabbitmqCluster {cluster!r} in the render")
            if kind == "User":
                secret = spec.get("importCredentialsSecret", {}).get("name")
                data = secrets.get(secret, {}).get("stringData", {})
                if not {"username", "password"} <= data.keys():
                    errors.append(f"User/{name}: Secret {secret!r} with username and password missing")
            else:
                user = spec.get("userReference", {}).get("name")
                if user not in users:
                    errors.append(f"{kind}/{name}: no User {user!r} in the render")
                for key, pattern in spec.get("permissions", {}).items():
                    if key == "exchange":
                        continue
                    try:
                        re.compile(pattern)
                    except re.error as e:
                        errors.append(f"{kind}/{name}: {key} {pattern!r} is not a pattern: {e}")
    for service in ("user", "order", "inventory", "notification"):
        if f"shop-{service}-amqp" not in users:
            errors.append(f"the {service} service's broker user has no User resource")
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"{checked} RabbitMQ users and permissions valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
