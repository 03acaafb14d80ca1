"""Reads every version of every object in a TAXII 2.1 collection with OASIS's
taxii2-client; writes them as one STIX bundle (argv[4]) and prints counts.
Over TLS, argv[5:8] are the server's CA and the client's certificate and key."""
import collections
import json
import sys

from taxii2client.v21 import Collection, as_pages

url, user, password, out = sys.argv[1:5]
tls = {}
if len(sys.argv) >= 8:
    tls = {"verify": sys.argv[5], "cert": (sys.argv[6], sys.argv[7])}
coll = Collection(url, user=user, password=password, **tls)
objects = []
for envelope in as_pages(coll.get_objects, per_request=1000, version="all"):
    objects.extend(envelope.get("objects", []))
versions = collections.Counter(
    (o["id"], o.get("modified", o.get("created", ""))) for o in objects
)
json.dump(
    {"type": "bundle", "id": "bundle--3f1e4a7e-5a5c-4d6b-9a0e-0c6f2d1b8e11", "objects": objects},
    open(out, "w"),
)
print(json.dumps({
    "objects": len(objects),
    "versions": len(versions),
    "duplicated": sorted(f"{k[0]}@{k[1]}" for k, n in versions.items() if n > 1),
}))
