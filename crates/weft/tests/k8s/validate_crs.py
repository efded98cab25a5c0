#!/usr/bin/env python3
"""Validates custom resources against the CRDs `weft install --crds` prints, as the API server
would with strict field validation: every field must be in the schema (an unknown field is an
error, not silently pruned), types, enums, bounds and required fields hold. Also checks that
every `default` in the CRDs validates against its own schema node, as the API server requires.

usage: validate_crs.py CRDS.yaml DOCS.yaml...

Only documents of a group the CRDs define are checked; one of such a group at a version or kind
no CRD serves is an error. Prints one line per error and, last, a
JSON object {"checked": {"KIND.GROUP/VERSION": count}, "errors": n}; exits 1 on any error.
"""
import json
import sys

import jsonschema
import yaml


def strict(schema):
    """The CRD's OpenAPI v3 schema as a JSON schema that rejects unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def default_errors(schema, path="(root)"):
    """The API server refuses a CRD whose `default`s do not validate against their own node."""
    errors = []
    if isinstance(schema, dict):
        if "default" in schema:
            node = strict({k: v for k, v in schema.items() if k != "default"})
            errors += [f"{path}: default {schema['default']!r}: {e.message}"
                       for e in jsonschema.Draft7Validator(node).iter_errors(schema["default"])]
        for key, sub in schema.get("properties", {}).items():
            errors += default_errors(sub, f"{path}.{key}")
        if isinstance(schema.get("items"), dict):
            errors += default_errors(schema["items"], f"{path}[]")
    return errors


def documents(path):
    with open(path, encoding="utf-8") as f:
        for i, doc in enumerate(yaml.safe_load_all(f)):
            if isinstance(doc, dict):
                yield f"{path}: document {i}", doc


def main():
    crds = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    schemas, groups = {}, set()
    for crd in crds:
        spec = crd["spec"]
        groups.add(spec["group"])
        for v in spec["versions"]:
            key = (spec["group"], v["name"], spec["names"]["kind"])
            schemas[key] = jsonschema.Draft7Validator(strict(v["schema"]["openAPIV3Schema"]))
    checked, errors = {}, 0
    for crd in crds:
        for v in crd["spec"]["versions"]:
            for e in default_errors(v["schema"]["openAPIV3Schema"]):
                print(f'{crd["metadata"]["name"]} {v["name"]}: {e}')
                errors += 1
    for path in sys.argv[2:]:
        for where, doc in documents(path):
            group, _, version = str(doc["apiVersion"]).rpartition("/")
            if group not in groups:
                continue
            name = f'{doc["kind"]}.{group}/{version}'
            validator = schemas.get((group, version, doc["kind"]))
            if validator is None:
                print(f"{where}: {name}: no CRD serves this kind at this version")
                errors += 1
                continue
            for e in validator.iter_errors(doc):
                field = ".".join(str(p) for p in e.absolute_path) or "(document)"
                print(f"{where}: {name}: {field}: {e.message}")
                errors += 1
            checked[name] = checked.get(name, 0) + 1
    print(json.dumps({"checked": checked, "errors": errors}))
    sys.exit(1 if errors else 0)


main()
