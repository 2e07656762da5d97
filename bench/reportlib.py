"""Helpers shared by report.py and report_scale.py: reading one file of a
bench/run.sh results folder, and parsing the 'prefix k=v k=v' lines the
bench tools print. Standard library only."""
import os


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
