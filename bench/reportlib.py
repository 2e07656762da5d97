"""Helpers shared by report.py and report_scale.py: reading one file of a
bench/run.sh results folder, parsing the 'prefix k=v k=v' lines the bench
tools print, and the two figures behind callgrind's instructions per byte (a
capture's packets and bytes, a run's instruction total), which
scripts/compare-builds.py reuses. Standard library only."""
import os
import re
import struct


def read_res(res, name, default=""):
    """The text of res/name, or default when it cannot be read."""
    try:
        with open(os.path.join(res, name)) as f:
            return f.read()
    except OSError:
        return default


def number_or_text(v):
    """v as a float when it reads as one, else v unchanged."""
    try:
        return float(v)
    except ValueError:
        return v


def kv_line(text, prefix):
    """Parses 'prefix k=v k=v' lines into a list of dicts (numbers as floats)."""
    out = []
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            d = {}
            for tok in line.split()[1:]:
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    d[k] = number_or_text(v)
            out.append(d)
    return out


def pcap_counts(path):
    """(packets, frame bytes) of a classic pcap file, or None when it cannot be
    read. The bytes are the captured frame lengths: what callgrind's
    instructions per byte divide by."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    e = "<" if struct.unpack_from("<I", data)[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, n, b = 24, 0, 0
    while off + 16 <= len(data):
        incl, orig = struct.unpack_from(e + "II", data, off + 8)
        n += 1
        b += incl
        off += 16 + incl
    return n, b


def callgrind_total(text):
    """The total instruction count of a callgrind output file's text (its
    'summary:' or 'totals:' line), or None."""
    m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None
