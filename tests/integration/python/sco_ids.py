"""Recomputes the id of every observable (SCO) of a STIX bundle with OASIS's
stix2 library (its UUIDv5 rule) and prints those that differ."""
import json
import sys

import stix2

bundle = json.load(open(sys.argv[1]))
checked, differ = 0, []
for o in bundle["objects"]:
    if o["type"] not in ("ipv4-addr", "ipv6-addr", "network-traffic"):
        continue
    made = stix2.parse({k: v for k, v in o.items() if k != "id"}, allow_custom=True)
    checked += 1
    if made.id != o["id"]:
        differ.append(f"{o['id']} != {made.id}")
print(json.dumps({"checked": checked, "differ": differ}))
