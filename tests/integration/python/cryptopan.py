"""Anonymizes the addresses read from standard input (one per line) with
PyPI's yacryptopan and the key given as 64 hex digits; prints one per line."""
import sys

import yacryptopan

pan = yacryptopan.CryptoPAn(bytes.fromhex(sys.argv[1]))
for line in sys.stdin:
    line = line.strip()
    if line:
        print(pan.anonymize(line))
