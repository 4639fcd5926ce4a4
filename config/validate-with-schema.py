#!/usr/bin/env python3
"""Checks config files against config/intilery-relay.schema.json, the way an editor or CI would.

Usage: validate-with-schema.py FILE...; prints "FILE: valid" or "FILE: invalid: REASON" per file, exits 1 if any
is invalid. A file that is not JSON, or has a key twice in one object, is invalid (check-config says the same).
"""
import json
import pathlib
import sys

import jsonschema

SCHEMA = pathlib.Path(__file__).with_name("intilery-relay.schema.json")


def unique_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError("duplicate key " + ", ".join(duplicates))
    return dict(pairs)


def main(files):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    all_valid = True
    for name in files:
        try:
            document = json.loads(pathlib.Path(name).read_text(), object_pairs_hook=unique_keys)
            error = jsonschema.exceptions.best_match(validator.iter_errors(document))
            reason = None if error is None else f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        except (OSError, ValueError) as problem:
            reason = str(problem)
        print(f"{name}: valid" if reason is None else f"{name}: invalid: {reason}")
        all_valid = all_valid and reason is None
    return 0 if all_valid else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
