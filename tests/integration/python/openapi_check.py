"""Checks the collector's OpenAPI document with openapi-spec-validator, and
each answer the API gave in the test against its schema in that document
(jsonschema, draft 2020-12, the dialect of OpenAPI 3.1's schemas).

    python3 openapi_check.py OPENAPI_JSON ANSWERS_JSON

ANSWERS_JSON: a list of {"schema": NAME, "answer": VALUE}, NAME a key of
components.schemas. Prints "N answers valid"; exits 1 on the first error.
"""

import json
import sys

import jsonschema
from openapi_spec_validator import validate


def main():
    doc = json.load(open(sys.argv[1]))
    validate(doc)
    answers = json.load(open(sys.argv[2]))
    checker = jsonschema.FormatChecker()
    for i, a in enumerate(answers):
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": "#/components/schemas/" + a["schema"],
            "components": doc["components"],
        }
        errors = list(
            jsonschema.Draft202012Validator(schema, format_checker=checker).iter_errors(a["answer"])
        )
        if errors:
            e = errors[0]
            print(
                f"answer {i} ({a['schema']}): {e.message} at {list(e.absolute_path)}",
                file=sys.stderr,
            )
            sys.exit(1)
    print(f"{len(answers)} answers valid")


main()
