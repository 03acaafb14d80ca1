"""Merges the capture corpus's classic-pcap Ethernet captures that carry
application traffic into one capture of at least PACKETS packets: the
captures one after another, repeated, each copy's IPv4 addresses moved
(second octet + copy number) so that its flows are new ones, and its
times moved past the previous copy's.

usage: app_corpus_mix.py CORPUS_DIR PACKETS OUT
"""
import os
import struct
import sys

WANT = ("dns", "tls", "http", "ssh", "modbus", "dnp3", "s7comm", "IEC104", "iec60780",
        "ethernetIP", "bacnet", "wikipedia", "bro.org", "get.pcap")


def records(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return None
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        return None
    nano = magic == 0xA1B23C4D
    if struct.unpack("<I", data[20:24])[0] != 1:  # Ethernet only
        return None
    out, at = [], 24
    while at + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack("<IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + incl]
        if len(frame) < incl:
            break
        ns = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        out.append((ns, orig, frame))
        at += 16 + incl
    return out


def main():
    corpus, want, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    caps = []
    for name in sorted(os.listdir(corpus)):
        if name.endswith(".pcap") and any(w in name for w in WANT) and "fuzz" not in name:
            r = records(os.path.join(corpus, name))
            if r:
                caps.append(r)
    base = caps[0][0][0] if caps and caps[0] else 0
    written, copy, t = 0, 0, base
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
        while written < want:
            for recs in caps:
                if not recs:
                    continue
                first = recs[0][0]
                for ns, orig, frame in recs:
                    fr = bytearray(frame)
                    if len(fr) >= 34 and fr[12:14] == b"\x08\x00":
                        fr[27] = (fr[27] + copy) % 256
                        fr[31] = (fr[31] + copy) % 256
                    # Captures with times out of order or decades apart
                    # keep their order within an hour.
                    ts = t + min(max(0, ns - first), 3_600_000_000_000)
                    f.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(fr), orig))
                    f.write(fr)
                    written += 1
                t = ts + 1_000_000
            copy += 1


main()
