"""Vigil's application metadata against Wireshark's dissectors (tshark).

usage: app_vs_tshark.py VIGIL CAPTURE...

For every capture, `vigil flows` gives the flows with their `app` objects
and tshark the fields its dissectors find in each packet; packets are put
in their flow by protocol and endpoint pair (the innermost IP layer), and
each field Vigil extracts is compared, per flow, with what tshark reports
for that flow. Prints one JSON object: per field, the flows where tshark
has the field, those where Vigil agrees, and the first disagreements.
"""

import json
import subprocess
import sys
from collections import defaultdict

FIELDS = [
    "frame.protocols",
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
    "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
    "dns.qry.name", "dns.flags.response", "dns.flags.rcode",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str",
    "http.host", "http.request.method",
    "ssh.protocol",
    "modbus.func_code",
    "s7comm.param.func",
    "dnp3.al.func",
    "iec60870_asdu.typeid",
    "bacapp.confirmed_service", "bacapp.unconfirmed_service",
    "enip.command", "cip.service",
]
FILTER = ("dns or tls.handshake or http.request or http.response or ssh.protocol or modbus "
          "or s7comm or dnp3.al.func or iec60870_asdu or bacapp or enip or cip")
SEP = "\x1f"


def key(proto, a, pa, b, pb):
    ends = sorted([(a, int(pa)), (b, int(pb))])
    return (proto, ends[0], ends[1])


def tshark(path):
    cmd = ["tshark", "-n", "-r", path, "-Y", FILTER, "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=" + SEP]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    flows = defaultdict(lambda: defaultdict(set))
    for line in out.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) < len(FIELDS):
            cols += [""] * (len(FIELDS) - len(cols))
        v = {f: (c.split(SEP) if c else []) for f, c in zip(FIELDS, cols)}
        stack = v["frame.protocols"][0].split(":") if v["frame.protocols"] else []
        # The innermost IP layer and transport.
        last_ip = max((i for i, p in enumerate(stack) if p in ("ip", "ipv6")), default=-1)
        # A packet quoted in an ICMP error is the ICMP flow's, not its own.
        if last_ip < 0 or any(p in ("icmp", "icmpv6") for p in stack[:last_ip]):
            continue
        fam = stack[last_ip]
        src = v[fam + ".src"][-1] if v[fam + ".src"] else None
        dst = v[fam + ".dst"][-1] if v[fam + ".dst"] else None
        if "tcp" in stack[last_ip:] and v["tcp.srcport"]:
            proto, sp, dp = "tcp", v["tcp.srcport"][-1], v["tcp.dstport"][-1]
        elif "udp" in stack[last_ip:] and v["udp.srcport"]:
            proto, sp, dp = "udp", v["udp.srcport"][-1], v["udp.dstport"][-1]
        else:
            continue
        if not src or not dst:
            continue
        k = key(proto, src, sp, dst, dp)
        fl = flows[k]
        for q in v["dns.qry.name"]:
            fl["dns.qry.name"].add(q)
        for resp, rc in zip(v["dns.flags.response"], v["dns.flags.rcode"]):
            if resp in ("1", "True"):
                fl["dns.flags.rcode"].add(int(rc, 0))
        for s in v["tls.handshake.extensions_server_name"]:
            fl["tls.sni"].add(s)
        for a in v["tls.handshake.extensions_alpn_str"]:
            fl["tls.alpn"].add(a)
        for h in v["http.host"]:
            fl["http.host"].add(h)
        for m in v["http.request.method"]:
            fl["http.method"].add(m)
        for s in v["ssh.protocol"]:
            fl["ssh.protocol"].add(s.strip())
        for name in ("modbus.func_code", "s7comm.param.func", "dnp3.al.func",
                     "iec60870_asdu.typeid", "enip.command", "cip.service"):
            for x in v[name]:
                fl[name].add(int(x, 0))
        for x in v["bacapp.confirmed_service"]:
            fl["bacnet.service"].add(int(x, 0))
        for x in v["bacapp.unconfirmed_service"]:
            fl["bacnet.service"].add(256 + int(x, 0))
    return flows


def vigil(binary, path):
    out = subprocess.run([binary, "flows", "-q", "-r", path], capture_output=True, text=True)
    flows = defaultdict(lambda: defaultdict(set))
    for line in out.stdout.splitlines():
        r = json.loads(line)
        if r["proto"] not in ("tcp", "udp") or r.get("src_port") is None:
            continue
        k = key(r["proto"], r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"])
        fl = flows[k]
        a = r.get("app")
        if not a:
            continue
        fl["app"].add(a["proto"])
        d = a.get("dns")
        if d:
            if d["qname"]:
                fl["dns.qry.name"].add(d["qname"])
            if d["rcode"] is not None:
                fl["dns.flags.rcode"].add(d["rcode"])
        t = a.get("tls")
        if t:
            if t["sni"]:
                fl["tls.sni"].add(t["sni"])
            for x in t["alpn"]:
                fl["tls.alpn"].add(x)
            if t["server_alpn"]:
                fl["tls.alpn"].add(t["server_alpn"])
        h = a.get("http")
        if h:
            if h["host"]:
                fl["http.host"].add(h["host"])
            if h["method"]:
                fl["http.method"].add(h["method"])
        s = a.get("ssh")
        if s:
            for x in (s["client"], s["server"]):
                if x:
                    fl["ssh.protocol"].add(x)
        i = a.get("ics")
        if i:
            field = {
                "modbus": "modbus.func_code", "s7comm": "s7comm.param.func",
                "dnp3": "dnp3.al.func", "iec104": "iec60870_asdu.typeid",
                "bacnet": "bacnet.service", "enip": "cip.service",
            }.get(a["proto"])
            if field:
                for f in i["functions"]:
                    fl[field].add(f["code"])
            if a["proto"] == "enip":
                for c in i["causes"]:
                    fl["enip.command"].add(c["code"])
    return flows


# How a field agrees: Vigil keeps the first value of a flow (one of
# tshark's), every value (the same set), or, for DNS, whose every exchange
# is a record of its own, values that are all tshark's (a query asked
# before the previous one was answered is not read).
FIRST = {"tls.sni", "http.host", "http.method"}
EACH = {"dns.qry.name", "dns.flags.rcode"}
SETS = {"tls.alpn", "ssh.protocol", "modbus.func_code", "s7comm.param.func", "dnp3.al.func",
        "iec60870_asdu.typeid", "bacnet.service", "enip.command", "cip.service"}


def main():
    binary, captures = sys.argv[1], sys.argv[2:]
    score = {f: {"flows": 0, "agree": 0, "diffs": []} for f in sorted(FIRST | SETS | EACH)}
    for path in captures:
        t = tshark(path)
        v = vigil(binary, path)
        name = path.rsplit("/", 1)[-1]
        for k, fields in t.items():
            mine = v.get(k, {})
            for f, theirs in fields.items():
                if not theirs:
                    continue
                s = score[f]
                s["flows"] += 1
                ours = mine.get(f, set())
                if f in FIRST:
                    ok = len(ours) == 1 and ours <= theirs
                elif f in EACH:
                    ok = bool(ours) and ours <= theirs
                else:
                    ok = ours == theirs
                if ok:
                    s["agree"] += 1
                elif len(s["diffs"]) < 12:
                    s["diffs"].append({"capture": name, "flow": list(map(str, k)),
                                       "tshark": sorted(map(str, theirs)),
                                       "vigil": sorted(map(str, ours))})
    json.dump(score, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
