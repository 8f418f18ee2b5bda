"""An audit's record as people read it: one self-contained HTML page (styles and its one script inline,
images as files beside it; nothing fetched from the network) and the defence plot (matplotlib)."""
from __future__ import annotations

import html
import json
from pathlib import Path

from .formats.base import Kind

PAPER_HOG_ERROR = 0.24  # Dosovitskiy & Brox's HOG inverter, their Table 2: what a well-trained attacker gets
GENERATOR = "featinv audit"  # the page's <meta name="generator">: a rerun replaces only a page that has it


def figure_png(fig) -> bytes:
    """A matplotlib figure as featinv writes its PNGs: 8-bit RGB (matplotlib's own are RGBA), marked as
    featinv's (a rerun may replace it). Closes the figure."""
    import numpy as np
    from matplotlib import pyplot as plt

    from .formats.png import encode_png

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # the Agg canvas: an opaque white background
    plt.close(fig)
    return encode_png(rgb)


def plot_defence(defence: list[dict]) -> bytes:
    """PNG bytes: normalized error and recognisability (top-1, top-5, chance) against keypoints kept."""
    import matplotlib

    matplotlib.use("Agg")  # no display, never a window
    from matplotlib import pyplot as plt

    keep = [d["keep"] for d in defence]
    fig, err_ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    rec_ax = err_ax.twinx()
    # The normalized error needs references of one size; without it, PSNR says the same the other way up.
    key, label = (("normalized_error", "normalized error (lower: closer)") if
                  all(d["normalized_error"] is not None for d in defence) else ("psnr", "PSNR, dB (higher: closer)"))
    err_ax.plot(keep, [d[key] for d in defence], "o-", color="#1f5fa8", label=label.split(" (")[0])
    for rate, style, name in (("recognised_top5", "s-", "recognised, top-5"), ("recognised_top1", "^--", "recognised, top-1")):
        rec_ax.plot(keep, [100 * d[rate] for d in defence], style, color="#c2452d", label=name)
    rec_ax.axhline(0.5, color="#888", lw=0.8, ls=":", label="chance, top-5 (0.5%)")
    err_ax.set_xscale("log")
    err_ax.set_xlim(max(keep) * 1.15, min(keep) / 1.15)  # fewer keypoints to the right
    err_ax.set_xticks(keep, [f"{k:g}" for k in keep])
    err_ax.minorticks_off()
    err_ax.set_xlabel("fraction of keypoints kept (--keep)")
    err_ax.set_ylabel(label, color="#1f5fa8")
    rec_ax.set_ylabel("recognised by SqueezeNet (%)", color="#c2452d")
    rec_ax.set_ylim(0, max(10.0, 115 * max(d["recognised_top5"] or 0 for d in defence)))
    lines = err_ax.get_legend_handles_labels()[0] + rec_ax.get_legend_handles_labels()[0]
    err_ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
    err_ax.set_title("What the attacker recovers as keypoints are removed", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.0f}%" if v >= 0.1 else f"{100 * v:.1f}%"


def _num(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _src(path: str) -> str:
    """A relative file name as an <img src>: each part %-escaped (names from a database may hold '#', '?')."""
    from urllib.parse import quote

    return _e("/".join(quote(part) for part in path.split("/")))


STYLE = """
:root { --ink: #1d1d1f; --muted: #5f6368; --line: #dadce0; --bad: #b3261e; --ok: #1e6b3a; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; padding: 1rem; max-width: 72rem; }
h1 { font-size: 1.4rem; margin: .2rem 0 .6rem; overflow-wrap: anywhere; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.verdict { font-size: 1.2rem; font-weight: 600; padding: .8rem 1rem; border-left: 6px solid var(--bad);
           background: #fdf1f0; }
.verdict.low { border-color: var(--ok); background: #eef7f1; }
.numbers { display: flex; flex-wrap: wrap; gap: .6rem; margin: 1rem 0; padding: 0; list-style: none; }
.numbers li { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .8rem; min-width: 9rem; }
.numbers b { display: block; font-size: 1.3rem; }
.muted, figcaption, .small { color: var(--muted); font-size: .9rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: middle; }
th { position: sticky; top: 0; background: #fff; }
th[data-key] { cursor: pointer; text-decoration: underline dotted; }
td img { width: 128px; height: auto; image-rendering: auto; display: block; }
img.plot { max-width: 100%; height: auto; }
.strip { display: flex; flex-wrap: wrap; gap: .4rem; }
.strip figure { margin: 0; width: 112px; } .strip img { width: 112px; display: block; }
.strip figcaption { overflow-wrap: anywhere; line-height: 1.2; }
.scroll { overflow-x: auto; }
.yes { color: var(--bad); font-weight: 600; } .no { color: var(--ok); }
img.missing { outline: 2px dashed var(--bad); min-height: 2rem; }
code { font-size: .85rem; word-break: break-all; }
@media (max-width: 640px) {
  body { padding: .6rem; font-size: 14px; }
  td img { width: 84px; }
  .wide { display: none; }
  .strip img, .strip figure { width: 64px; }  /* a photo and four reconstructions on one line at 360 px */
}
"""

# Sorts the table by a column header's key; marks an image that does not load (a report folder moved
# without its images) and counts those that did (data-images-loaded), which the browser test reads.
SCRIPT = """
document.querySelectorAll('th[data-key]').forEach(function (th) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], key = th.dataset.key, up = th.dataset.up !== '1';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = parseFloat(a.dataset[key]), y = parseFloat(b.dataset[key]);
      x = isNaN(x) ? Infinity : x; y = isNaN(y) ? Infinity : y;
      return up ? x - y : y - x;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    th.dataset.up = up ? '1' : '0';
  });
});
function settle() {
  var imgs = document.images, loaded = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) loaded++;
    else if (imgs[i].complete) { imgs[i].classList.add('missing'); imgs[i].alt = 'missing: ' + imgs[i].getAttribute('src'); }
  }
  document.body.dataset.imagesLoaded = loaded;
  document.body.dataset.images = imgs.length;
}
window.addEventListener('load', settle);
"""


def _header(record: dict) -> str:
    s, p = record["summary"], record["provenance"]
    low = s["recognised_top5"] is not None and s["recognised_top5"] < 0.05
    numbers = [("images", s["images"]), ("with a photo to compare", s["with_reference"]),
               ("normalized error", _num(s["normalized_error"])),
               ("recognised, top-1", f"{_pct(s['recognised_top1'])} <span class=small>(chance 0.1%)</span>"),
               ("recognised, top-5", f"{_pct(s['recognised_top5'])} <span class=small>(chance 0.5%)</span>")]
    models = "; ".join(f"{_e(m['file'])}: {_num(m.get('held_out_error'))} on held-out photos"
                       for m in p["models"] if m.get("held_out_error") is not None)
    hog = (f": the paper's HOG inverter reaches {PAPER_HOG_ERROR} (its Table 2) where featinv's shipped one "
           f"reaches {_num(p['shipped_hog_error'])}" if p.get("shipped_hog_error") else "")
    return f"""
<h1>Privacy audit of {_e(", ".join(p["sources"]))}</h1>
<p class="verdict{' low' if low else ''}">{_e(s["verdict"])}</p>
<ul class="numbers">{"".join(f"<li>{label}<b>{value}</b></li>" for label, value in numbers)}</ul>
<p><b>How to read them.</b> Each photo's {_e(p["feature"])} features were inverted by featinv's
learned network (Dosovitskiy &amp; Brox, CVPR 2016). <i>Normalized error</i> is the distance between
photo and reconstruction divided by the mean distance between two different photos of this set:
0 is a perfect copy, 1 is as far as another photo. <i>Recognised</i>: the shipped SqueezeNet
(ImageNet, 1000 classes) classifies the photo and its reconstruction; top-1 counts a reconstruction
whose first class is the photo's, top-5 one whose five classes include it. The judge stands in for a
person looking, and is biased: it is the network the <code>squeezenet:*</code> features come from.</p>
<p><b>A lower bound.</b> This measures featinv's shipped inverter{f" ({models})" if models else ""},
trained on about 15,000 photos on a CPU. A better-trained attacker recovers more{hog}. Features that
look safe here may not be.</p>
"""


def _defence(record: dict) -> str:
    d = record["defence"]
    if not d:
        return ""
    rows = "".join(f"<tr><td>{x['keep']:g}</td><td>{_num(x['keypoints'], 0)}</td><td>{_num(x['normalized_error'])}</td>"
                   f"<td class=wide>{_num(x['psnr'], 2)}</td><td>{_pct(x['recognised_top1'])}</td><td>{_pct(x['recognised_top5'])}</td></tr>"
                   for x in d)
    strip = ""
    shown = [r for r in record["images"] if r.get("defence")]
    if shown:
        strip = "<h3>What the attacker sees</h3>" + "".join(
            f"<div class=strip><figure><img src=\"{_src(r['reference_view'])}\" alt=\"\" loading=lazy>"
            f"<figcaption>{_e(r['name'])}</figcaption></figure>"
            f"<figure><img src=\"{_src(r['reconstruction'])}\" alt=\"\" loading=lazy>"
            f"<figcaption>all {r['keypoints']} keypoints</figcaption></figure>"
            + "".join(f"<figure><img src=\"{_src(path)}\" alt=\"\" loading=lazy><figcaption>keep {k}</figcaption></figure>"
                      for k, path in r["defence"].items()) + "</div>" for r in shown)
    plot = f"<img class=plot src=\"{_src(record['plot'])}\" alt=\"defence plot\">" if record.get("plot") else ""
    return f"""
<h2>Defence: keep fewer keypoints</h2>
<p class=muted>Each photo's keypoints thinned at random (seed {record["provenance"]["seed"]}; a kept keypoint keeps its
descriptor and position), gridded again and inverted: <code>featinv perturb --keep-keypoints P</code> does the same to a file.</p>
{plot}
<div class=scroll><table><thead><tr><th>keep</th><th>keypoints (mean)</th><th>normalized error</th><th class=wide>PSNR (dB)</th>
<th>top-1</th><th>top-5</th></tr></thead><tbody>{rows}</tbody></table></div>
{strip}
"""


def _images(record: dict) -> str:
    def leak_rank(r: dict) -> float:  # most leaking first: recognised at top-1, then top-5, then closest
        e = r.get("normalized_error")
        return -2 * bool(r.get("recognised_top1")) - bool(r.get("recognised_top5")) + (0.0 if e is None else e / 10)

    rows = []
    for r in sorted(record["images"], key=leak_rank):
        ref = f"<img src=\"{_src(r['reference_view'])}\" alt=\"\" loading=lazy>" if r.get("reference_view") else "–"
        said = ("top-1" if r.get("recognised_top1") else "top-5" if r.get("recognised_top5") else "no") \
            if r.get("reference") else "–"
        classes = (f"<div class=small>{_e(r['reference_class'])} → {_e(', '.join(r['reconstruction_classes'][:3]))}</div>"
                   if r.get("reference_class") else "")
        rows.append(
            f"<tr data-leak=\"{leak_rank(r):.6f}\" data-error=\"{_num(r.get('normalized_error'), 6)}\">"
            f"<td>{_e(r['name'])}</td><td>{ref}</td>"
            f"<td><img src=\"{_src(r['reconstruction'])}\" alt=\"reconstruction of {_e(r['name'])}\" loading=lazy></td>"
            f"<td>{_num(r.get('normalized_error'))}</td><td class=wide>{_num(r.get('psnr'), 2)}</td>"
            f"<td><span class=\"{'yes' if said in ('top-1', 'top-5') else 'no'}\">{said}</span>{classes}</td></tr>")
    return f"""
<h2>Every image</h2>
<p class=muted>Most leaking first (recognised at top-1, then top-5, then the closest); click a header to sort.</p>
<div class=scroll><table id=images><thead><tr><th>image</th><th>photo</th><th>reconstruction</th>
<th data-key=error>normalized error</th><th class=wide>PSNR (dB)</th><th data-key=leak>recognised</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>
"""


def _provenance(record: dict) -> str:
    p = record["provenance"]
    models = "".join(f"<li><code>{_e(m['file'])}</code> sha256 {_e(m['sha256'][:16])}…</li>" for m in p["models"])
    return f"""
<h2>Provenance</h2>
<ul class=small><li>command: <code>{_e(p["command"])}</code></li><li>featinv {_e(p["featinv_version"])},
torch {_e(p["torch_version"])}; {_e(p["date"])}</li><li>feature: <code>{_e(p["feature"])}</code>; method: {_e(p["method"])};
judge: <code>{_e(p["judge"])}</code></li><li>models:<ul>{models}</ul></li>
<li>numbers: <a href="audit.json">audit.json</a></li></ul>
"""


def page(record: dict) -> str:
    """The report's index.html, made from its audit.json record alone."""
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width, initial-scale=1">
<meta name=generator content="{GENERATOR}"><title>featinv audit: {_e(", ".join(record["provenance"]["sources"]))}</title>
<style>{STYLE}</style></head>
<body>{_header(record)}{_defence(record)}{_images(record)}{_provenance(record)}
<script>{SCRIPT}</script></body></html>
"""


def is_ours(path: Path) -> bool:
    """Whether an existing file is a report featinv wrote: a page with its generator, or an audit record."""
    from .audit import AUDIT_FORMAT

    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text()).get("format") == AUDIT_FORMAT
        except (ValueError, OSError, AttributeError):
            return False
    return f'content="{GENERATOR}"'.encode() in head


REPORT_FILE = Kind("audit report", is_ours, expected=lambda path: "an audit featinv wrote")
