#!/usr/bin/env python3
"""Renders the shipped Grafana dashboard into one PNG from a Prometheus server.

This is not Grafana: it reads deploy/compose/grafana/dashboards/intake.json,
lays its panels out by their gridPos (24 columns, as Grafana does), and draws
each timeseries panel's targets as Grafana would ask for them: the PromQL
evaluated with /api/v1/query_range over the window given, with Grafana's
$__interval / $__rate_interval worked out the way Grafana works them out
(step from the time range over the panel's width in pixels, rounded, never
below the datasource's scrape interval; rate window max(interval + scrape,
4 x scrape)), the legend from legendFormat, and the axis in the panel's unit.
It exists because the machines this project is built on cannot run Grafana
(no image registry, no Grafana package); the PNG says so in its footer.

  render-dashboard.py --prometheus http://127.0.0.1:9090 --start UNIX --end UNIX --out x.png

deploy/compose/render-dashboard.sh runs a real cluster under load with a real
Prometheus and calls this on its window; pointed at the compose profile's
Prometheus (127.0.0.1:9090) it renders that cluster instead.
Needs the pins in deploy/compose/render-requirements.txt (matplotlib).
"""

import argparse
import datetime as dt
import io
import json
import math
import re
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
from PIL import Image  # noqa: E402 (matplotlib's own dependency)

# Grafana's classic palette, in its order, so series get the colours they
# would get there.
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
           "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477",
           "#B7DBAB", "#F4D598", "#70DBED", "#F9BA8F", "#F29191", "#82B5D8", "#E5A8E2", "#AEA2E0"]
GRID_COLS = 24
# Grafana's grid row is 30 px plus an 8 px margin; a little taller here so a
# panel still has room for its plot once a long legend sits under it.
ROW_PX = 40


class RenderError(Exception):
    pass


def round_interval_ms(ms):
    """Grafana's kbn.roundInterval: the step a range/width gives, made round."""
    table = [(15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
             (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
             (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000),
             (1050000, 600000), (2100000, 1200000), (5400000, 1800000), (9000000, 3600000),
             (16200000, 7200000), (32400000, 10800000), (86400000, 43200000)]
    for limit, rounded in table:
        if ms < limit:
            return rounded
    return 86400000


def parse_duration_s(text):
    """'5s', '1m', '250ms' -> seconds (Prometheus/Grafana duration syntax)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", text)
    if not m:
        raise RenderError(f"not a duration: {text!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def fmt_duration(seconds):
    """Seconds -> a PromQL range literal (whole ms, as Grafana writes them)."""
    ms = int(round(seconds * 1000))
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    return f"{s // 60}m" if s % 60 == 0 and s >= 60 else f"{s}s"


def datasource_scrape_interval(path):
    """The provisioned datasource's jsonData.timeInterval (Grafana's 'scrape
    interval' for the datasource); Grafana assumes 15s when it is not set."""
    if not path:
        return 15.0
    text = open(path, encoding="utf-8").read()
    m = re.search(r"^\s*timeInterval:\s*[\"']?([0-9.]+(?:ms|s|m|h))[\"']?\s*$", text, re.M)
    return parse_duration_s(m.group(1)) if m else 15.0


def template_values(dash):
    """Dashboard variables -> the text Grafana would put in a query: the
    current value, a multi-value or All selection as a regex alternation."""
    out = {}
    for var in dash.get("templating", {}).get("list", []):
        name = var.get("name")
        cur = var.get("current") or {}
        value = cur.get("value", var.get("query", ""))
        if value in ("$__all", ["$__all"]):
            opts = [o.get("value") for o in var.get("options", []) if o.get("value") != "$__all"]
            value = var.get("allValue") or ("(" + "|".join(map(re.escape, opts)) + ")" if opts else ".*")
        elif isinstance(value, list):
            value = "(" + "|".join(map(re.escape, value)) + ")" if len(value) > 1 else (value[0] if value else "")
        out[name] = str(value)
    return out


def substitute(expr, variables):
    """Replaces $name, ${name} and [[name]]; any variable left over is an
    error, not a query silently sent with a dollar in it."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        name = name.split(":")[0]  # ${var:format}: the plain value is what PromQL wants here
        if name not in variables:
            raise RenderError(f"unknown dashboard variable ${name} in {expr!r}")
        return variables[name]
    return re.sub(r"\$\{([A-Za-z0-9_:]+)\}|\[\[([A-Za-z0-9_]+)\]\]|\$([A-Za-z_][A-Za-z0-9_]*)", repl, expr)


def query_range(base, expr, start, end, step):
    qs = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    url = f"{base.rstrip('/')}/api/v1/query_range?{qs}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        raise RenderError(f"Prometheus refused {expr!r}: {e.read().decode(errors='replace')}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RenderError(f"querying {base} for {expr!r}: {e}") from e
    if body.get("status") != "success":
        raise RenderError(f"Prometheus answered {body.get('errorType')}: {body.get('error')} for {expr!r}")
    return body["data"]["result"]


def legend(fmt, metric, expr):
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    name = metric.get("__name__", "")
    if not labels:
        return name or expr
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def si(value, suffix):
    """Grafana's short SI scaling for counts and rates: 1.5 K, 2.3 Mil."""
    a = abs(value)
    for div, pre in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if a >= div:
            return f"{value / div:.3g}{pre}{suffix}"
    return f"{value:.3g}{suffix}" if a else f"0{suffix}"


def unit_formatter(unit):
    def seconds(v, _pos=None):
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 0.001:
            return f"{v * 1e6:.3g} µs"
        if a < 1:
            return f"{v * 1e3:.3g} ms"
        if a < 60:
            return f"{v:.3g} s"
        if a < 3600:
            return f"{v / 60:.3g} min"
        return f"{v / 3600:.3g} hour"

    def iec_bytes(v, _pos=None):
        for div, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(v) >= div:
                return f"{v / div:.3g} {name}"
        return f"{v:.3g} B"

    fns = {
        "s": seconds,
        "bytes": iec_bytes,
        "ops": lambda v, _p=None: si(v, " ops/s"),
        "reqps": lambda v, _p=None: si(v, " req/s"),
        "percentunit": lambda v, _p=None: f"{v * 100:.3g}%",
        "percent": lambda v, _p=None: f"{v:.3g}%",
    }
    return mticker.FuncFormatter(fns.get(unit, lambda v, _p=None: si(v, "")))


def series_with_gaps(values, step):
    """Prometheus leaves out steps with no sample; Grafana draws those as
    gaps (spanNulls off), so a missing step becomes NaN here."""
    xs, ys, prev = [], [], None
    for t, v in values:
        t = float(t)
        if prev is not None and t - prev > step * 1.5:
            xs.append(dt.datetime.fromtimestamp(prev + step, dt.timezone.utc))
            ys.append(math.nan)
        xs.append(dt.datetime.fromtimestamp(t, dt.timezone.utc))
        try:
            ys.append(float(v))
        except ValueError:
            ys.append(math.nan)
        prev = t
    return xs, ys


def load_events(path):
    """Lines 'UNIX_SECONDS<TAB>label': what the run did and when."""
    events = []
    if not path:
        return events
    for line in open(path, encoding="utf-8"):
        if line.strip():
            t, _, label = line.rstrip("\n").partition("\t")
            events.append((dt.datetime.fromtimestamp(float(t), dt.timezone.utc), label))
    return events


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard", default="deploy/compose/grafana/dashboards/intake.json")
    ap.add_argument("--datasource", default="deploy/compose/grafana/provisioning/datasources/prometheus.yml",
                    help="provisioned datasource file, for its timeInterval (Grafana's min step)")
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--start", type=float, required=True, help="unix seconds")
    ap.add_argument("--end", type=float, required=True, help="unix seconds")
    ap.add_argument("--out", required=True)
    ap.add_argument("--events", help="file of 'UNIX<TAB>label' lines drawn as markers")
    ap.add_argument("--note", default="", help="what the run was, for the footer")
    ap.add_argument("--width", type=int, default=1600, help="pixels; Grafana's step depends on it")
    ap.add_argument("--date", help="the run's date for the footer (default: --start's, UTC)")
    args = ap.parse_args()

    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dash = json.load(f)
        scrape = datasource_scrape_interval(args.datasource)
        events = load_events(args.events)
    except (OSError, ValueError, RenderError) as e:
        print(f"render-dashboard: {e}", file=sys.stderr)
        return 1
    rng = args.end - args.start
    if rng <= 0:
        print("render-dashboard: --end must be after --start", file=sys.stderr)
        return 1

    panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    head_px, foot_px = 72, 84
    height = head_px + rows * ROW_PX + foot_px
    dpi = 100
    fig = plt.figure(figsize=(args.width / dpi, height / dpi), dpi=dpi)
    plt.rcParams.update({"font.size": 8, "axes.edgecolor": "#999999"})
    date = args.date or dt.datetime.fromtimestamp(args.start, dt.timezone.utc).strftime("%Y-%m-%d")
    t0 = dt.datetime.fromtimestamp(args.start, dt.timezone.utc)
    t1 = dt.datetime.fromtimestamp(args.end, dt.timezone.utc)
    fig.text(0.01, 1 - 18 / height, f"{dash.get('title', 'dashboard')}", fontsize=15, weight="bold", va="center")
    fig.text(0.99, 1 - 18 / height, f"{t0:%Y-%m-%d %H:%M:%S} to {t1:%H:%M:%S} UTC", fontsize=9, ha="right",
             va="center", color="#333333")
    fig.text(0.01, 1 - 40 / height,
             f"Not a Grafana screenshot: rendered by deploy/compose/render-dashboard.py (matplotlib) from Prometheus "
             f"query_range data of a real run on {date}.",
             fontsize=9.5, color="#A00000", va="center")
    fig.text(0.01, 1 - 57 / height,
             f"Panels, layout, titles, units, PromQL and legends from {args.dashboard}; step and $__rate_interval "
             f"as Grafana would pick them (datasource scrape interval {fmt_duration(scrape)}).",
             fontsize=8, color="#555555", va="center")

    report = []
    for p in panels:
        g = p["gridPos"]
        # Grafana asks for one point per pixel of the panel at most.
        px = g["w"] / GRID_COLS * args.width
        max_points = p.get("maxDataPoints") or px
        step = round_interval_ms(rng * 1000 / max_points) / 1000
        step = max(step, parse_duration_s(p["interval"]) if p.get("interval") else scrape)
        rate_iv = max(step + scrape, 4 * scrape)
        variables = template_values(dash)
        variables.update({
            "__interval": fmt_duration(step), "__interval_ms": str(int(step * 1000)),
            "__rate_interval": fmt_duration(rate_iv), "__rate_interval_ms": str(int(rate_iv * 1000)),
            "__range": fmt_duration(rng), "__range_s": str(int(rng)), "__range_ms": str(int(rng * 1000)),
        })
        # Grafana's Prometheus datasource aligns the window to the step.
        qstart = math.floor(args.start / step) * step
        qend = math.ceil(args.end / step) * step

        left = 0.01 + 0.98 * g["x"] / GRID_COLS
        width = 0.98 * g["w"] / GRID_COLS
        top_px = head_px + g["y"] * ROW_PX
        box_h = g["h"] * ROW_PX
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "none")
        curves, lines = [], []
        try:
            for t in p.get("targets", []):
                if t.get("hide"):
                    continue
                expr = substitute(t["expr"], variables)
                result = query_range(args.prometheus, expr, qstart, qend, step)
                lines.append(f"  {t.get('refId', '?')}: {len(result)} series  {expr}")
                for s in result:
                    curves.append((legend(t.get("legendFormat", ""), s["metric"], expr),
                                   *series_with_gaps(s["values"], step)))
        except RenderError as e:
            print(f"render-dashboard: panel {p.get('title')!r}: {e}", file=sys.stderr)
            return 1
        report.append(f"{p.get('title')}: {len(curves)} series (step {fmt_duration(step)}, "
                      f"$__rate_interval {fmt_duration(rate_iv)})\n" + "\n".join(lines))

        # Legend rows under the plot, as Grafana's bottom list legend; as many
        # columns as the longest label lets fit (about 4.6 px a character at 7 pt).
        longest = max((len(c[0]) for c in curves), default=1)
        ncol = max(1, min(len(curves), int((px - 40) // (longest * 4.6 + 40))))
        legend_rows = math.ceil(len(curves) / ncol) if curves else 0
        legend_px = 14 * legend_rows + (6 if legend_rows else 0)
        title_px, axis_px = 22, 22
        ax_top = top_px + title_px
        ax_h = box_h - title_px - axis_px - legend_px - 8
        # Room for the tick labels (the unit is in them) left of the plot.
        ylab_px, right_px = 70, 26
        ax = fig.add_axes([left + ylab_px / args.width, 1 - (ax_top + ax_h) / height,
                           width - (ylab_px + right_px) / args.width, ax_h / height])
        fig.text(left + 0.004, 1 - (top_px + 11) / height, p.get("title", ""), fontsize=10, weight="bold",
                 va="center")
        fig.add_artist(plt.Rectangle((left, 1 - (top_px + box_h - 4) / height), width - 0.004,
                                     (box_h - 4) / height, transform=fig.transFigure, fill=False,
                                     edgecolor="#D0D0D0", linewidth=0.8))
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        fill = custom.get("fillOpacity", 0) / 100
        lw = custom.get("lineWidth", 1)
        # Grafana's lineInterpolation; "smooth" is drawn straight.
        steps = {"stepAfter": "post", "stepBefore": "pre"}.get(custom.get("lineInterpolation", "linear"))
        ymin = 0.0
        for i, (name, xs, ys) in enumerate(curves):
            color = PALETTE[i % len(PALETTE)]
            ax.plot(xs, ys, color=color, linewidth=lw, label=name, drawstyle=f"steps-{steps}" if steps else "default")
            if fill:
                ax.fill_between(xs, ys, color=color, alpha=fill, linewidth=0, step=steps)
            finite = [y for y in ys if not math.isnan(y)]
            if finite:
                ymin = min(ymin, min(finite))
        ax.set_xlim(t0, t1)
        if not curves:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center", fontsize=12,
                    color="#888888")
            ax.set_yticks([])
        else:
            # Counts, rates, latencies and bytes here are never negative: the
            # axis starts at 0 so a flat line reads as what it is.
            ax.set_ylim(bottom=ymin)
            ax.yaxis.set_major_formatter(unit_formatter(unit))
            ax.yaxis.set_major_locator(mticker.MaxNLocator(nbins=5, integer=unit == "none"))
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=9, tz=dt.timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.timezone.utc))
        ax.grid(True, color="#E6E6E6", linewidth=0.6)
        ax.tick_params(labelsize=7, length=2)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
        # The run's events as numbered dashed lines (Grafana's annotations);
        # the footer says what each number was.
        for n, (when, _label) in enumerate(events, 1):
            if t0 <= when <= t1:
                ax.axvline(when, color="#555555", linewidth=0.7, linestyle=(0, (3, 3)), zorder=0)
                ax.text(when, 1.0, f" {n}", transform=ax.get_xaxis_transform(), fontsize=7, weight="bold",
                        color="#444444", va="top", ha="left")
        if curves:
            ax.legend(loc="upper left", bbox_to_anchor=(0, -axis_px / ax_h), ncol=ncol, fontsize=7,
                      frameon=False, handlelength=1.2, columnspacing=1.2, borderaxespad=0, labelspacing=0.25)

    foot = args.note
    if events:
        foot += ("  " if foot else "") + "Events: " + ", ".join(
            f"{n} {when:%H:%M:%S} {label}" for n, (when, label) in enumerate(events, 1)) + "."
    if foot:
        # About 6 px a character at 8 pt.
        fig.text(0.01, 1 - (head_px + rows * ROW_PX + 6) / height, textwrap.fill(foot, int(args.width * 0.98 / 6)),
                 fontsize=8, color="#333333", va="top", linespacing=1.4)
    fig.text(0.01, 12 / height,
             "Not Grafana (the machines this was made on cannot run it); regenerate with "
             "deploy/compose/render-dashboard.sh (README, Deploying). Dashed lines: the run's events, "
             "numbered as above, at the times the script logged them.",
             fontsize=8, color="#A00000", va="center")

    buf = io.BytesIO()
    # No timestamp or version in the file, so one set of data renders to the
    # same bytes.
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    buf.seek(0)
    # A 256-colour palette: a line chart needs no more, and it keeps the
    # committed file small.
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(args.out, format="PNG", optimize=True)
    print("\n".join(report))
    print(f"render-dashboard: wrote {args.out} ({img.size[0]}x{img.size[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
