"""PNG plots for bench/REPORT.md, drawn by gnuplot (Debian's gnuplot-nox).

Each function writes its data as a gnuplot inline data block and renders one
PNG; it returns the PNG's path, or None with a reason on stderr when gnuplot
is missing or fails (the report then says so instead of showing the plot).
Standard library only.
"""
import os
import shutil
import subprocess
import sys

TERM = "set terminal pngcairo size 900,520 font 'DejaVu Sans,10' noenhanced"
TERM_FALLBACK = "set terminal png size 900,520 noenhanced"


def _gnuplot(script, out_png):
    exe = shutil.which("gnuplot")
    if not exe:
        print("plots: gnuplot not installed (apt-get install gnuplot-nox): "
              f"{os.path.basename(out_png)} not drawn", file=sys.stderr)
        return None
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    for term in (TERM, TERM_FALLBACK):
        full = f"{term}\nset output '{out_png}'\n{script}\nset output\n"
        p = subprocess.run([exe], input=full, capture_output=True, text=True)
        if p.returncode == 0 and os.path.exists(out_png) and os.path.getsize(out_png) > 0:
            return out_png
    print(f"plots: gnuplot failed for {out_png}: {p.stderr.strip()[:300]}", file=sys.stderr)
    return None


def _block(name, rows):
    lines = [f"${name} << EOD"]
    for r in rows:
        lines.append(" ".join(_q(v) for v in r))
    lines.append("EOD")
    return "\n".join(lines) + "\n"


def _q(v):
    if isinstance(v, str):
        return '"' + v.replace('"', "'") + '"'
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def throughput_vs_rules(rows, out_png, title="Throughput vs rule-set size"):
    """rows: (label, n_rules, engine_msgs_per_s, ceiling_msgs_per_s or None).
    Log-log: messages/s per core against rules loaded, the engine and the
    matching ceiling (Hyperscan alone on the same texts) side by side."""
    rows = [r for r in rows if r[1] and r[2]]
    if not rows:
        return None
    data = _block("E", [(r[1], r[2], r[0]) for r in rows])
    ceil = [(r[1], r[3], r[0]) for r in rows if r[3]]
    if ceil:
        data += _block("C", ceil)
    plot = ("plot $E using 1:2 with linespoints pt 7 lw 2 title 'breakwater (engine, whole "
            "pipeline)'")
    # one label per point, staggered: neighbouring rule-set sizes overlap
    for i, r in enumerate(rows):
        data += (f"set label {i + 1} '{r[0]}' at {r[1]},{r[2]} offset 0.8,"
                 f"{-1.5 - 1.4 * i if i else 1.2} left\n")
    if ceil:
        plot += ", $C using 1:2 with linespoints pt 5 lw 2 dt 2 title 'Hyperscan alone " \
                "(matching ceiling)'"
    script = data + f"""
set title '{title}'
set xlabel 'rules loaded'
set ylabel 'messages/s (one core)'
set logscale xy
set grid
set key top right
set xrange [*:*]
set offsets graph 0.1, graph 0.1, graph 0.15, graph 0.1
{plot}
"""
    return _gnuplot(script, out_png)


def storm_cost(rows, out_png, title="Storm tracking cost vs tracked ids"):
    """rows: (load, ids, ns_per_msg, bytes_per_key). One line per load
    (uniform, skewed); ns per message on the left axis, bytes per key state
    on the right."""
    loads = sorted({r[0] for r in rows})
    if not loads:
        return None
    data, plots = "", []
    for i, load in enumerate(loads):
        pts = sorted((r[1], r[2], r[3]) for r in rows if r[0] == load)
        data += _block(f"S{i}", pts)
        plots.append(f"$S{i} using 1:2 axes x1y1 with linespoints pt 7 lw 2 "
                     f"title 'ns per message ({load})'")
        plots.append(f"$S{i} using 1:3 axes x1y2 with linespoints pt 4 dt 2 "
                     f"title 'bytes per key state ({load})'")
    script = data + f"""
set title '{title}'
set xlabel 'tracked ids (goal)'
set ylabel 'ns per message (all tracking)'
set y2label 'bytes per key state'
set logscale x
set logscale y
set ytics nomirror
set y2tics
set y2range [0:*]
set yrange [100:*]
set grid
set key top left
plot {", ".join(plots)}, 200 axes x1y1 with lines lc rgb '#cc0000' dt 3 title 'target: 200 ns per message at 10^7 ids'
"""
    return _gnuplot(script, out_png)


def timeline(series, marks, out_png, title="Event timeline", bin_s=1.0):
    """series: {label: [(t_seconds, messages_in_bin)]} (t from the capture's
    start); marks: [(t_seconds, text)] drawn as vertical lines (detection
    moments). Transactions per second, one line per label."""
    if not series:
        return None
    data, plots = "", []
    for i, (label, pts) in enumerate(series.items()):
        if not pts:
            continue
        data += _block(f"T{i}", sorted(pts))
        plots.append(f"$T{i} using 1:($2/{bin_s}) with steps lw 1.5 title '{label}'")
    arrows = []
    for j, (t, text) in enumerate(marks):
        arrows.append(f"set arrow {j + 1} from {t:.3f}, graph 0 to {t:.3f}, graph 1 "
                      f"nohead lc rgb '#cc0000' dt 3")
        arrows.append(f"set label {j + 1} '{text}' at {t:.3f}, graph {0.97 - 0.05 * (j % 8):.2f} "
                      f"left offset 0.5,0 tc rgb '#cc0000' font ',8'")
    script = data + "\n".join(arrows) + f"""
set title '{title}'
set xlabel 'seconds from the start of the capture'
set ylabel 'transactions/s (bins of {bin_s:g} s)'
set yrange [0:*]
set grid
set key outside bottom center horizontal
plot {", ".join(plots)}
"""
    return _gnuplot(script, out_png)
