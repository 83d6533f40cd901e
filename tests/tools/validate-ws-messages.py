"""Validates WebSocket messages captured by the integration tests against the OpenAPI
document's message schemas (components.schemas.WsServerMessage), with jsonschema's
Draft 2020-12 validator (OpenAPI 3.1 schemas are JSON Schema 2020-12).

usage: validate-ws-messages.py OPENAPI.json MESSAGES.json
"""
import json
import sys

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

document = json.load(open(sys.argv[1]))
messages = json.load(open(sys.argv[2]))
# The document is one resource; its "#/components/schemas/..." references resolve within it.
resource = Resource.from_contents(document, default_specification=DRAFT202012)
registry = Registry().with_resource("urn:orchestra-openapi", resource)
schema = {"$ref": "urn:orchestra-openapi#/components/schemas/WsServerMessage"}
validator = jsonschema.Draft202012Validator(schema, registry=registry)
failures = 0
for message in messages:
    errors = sorted(validator.iter_errors(message), key=lambda e: e.path)
    if errors:
        failures += 1
        print(f"{message.get('type')}: {errors[0].message[:300]}\n  in {json.dumps(message)[:300]}")
print(f"{len(messages)} messages, {failures} not matching the document")
sys.exit(1 if failures else 0)
