#!/usr/bin/env python3
"""Prints a consumer group's state as the tansu broker of scripts/services.sh stores it:
its generation, its live members, and the partition assignment of its current
generation (decoded). Used to show that a Kafka stall in the crash run is the broker's:
an assignment that names a member the broker has already dropped.

    python3 scripts/tansu-group.py GROUP [path/to/tansu.db]
"""
import json
import sqlite3
import struct
import sys

group = sys.argv[1]
db = sys.argv[2] if len(sys.argv) > 2 else ".services/tansu/tansu.db"
con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
row = con.execute(
    "SELECT d.detail FROM consumer_group g JOIN consumer_group_detail d"
    " ON d.consumer_group = g.id WHERE g.name = ?",
    (group,),
).fetchone()
if row is None:
    sys.exit(f"no group {group!r} in {db}")
detail = json.loads(row[0])
if isinstance(detail, str):
    detail = json.loads(detail)
live = sorted(detail["members"])
print("generation", detail["generation_id"], "live members", live)
for state, body in detail["state"].items():
    print("state", state, "leader", body.get("leader"))
    for member, raw in sorted(body.get("assignments", {}).items()):
        b, i, out = bytes(raw), 2, []
        (n,) = struct.unpack(">i", b[i : i + 4]); i += 4
        for _ in range(n):
            (l,) = struct.unpack(">h", b[i : i + 2]); i += 2
            topic = b[i : i + l].decode(); i += l
            (pn,) = struct.unpack(">i", b[i : i + 4]); i += 4
            parts = list(struct.unpack(f">{pn}i", b[i : i + 4 * pn])); i += 4 * pn
            out.append(f"{topic}{parts}")
        mark = "" if member in live else "   <- not a member any more"
        print(f"  {member}: {', '.join(out) or '-'}{mark}")
