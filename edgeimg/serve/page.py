"""The status page of `edgeimg serve --http`: one self-contained HTML document, no scripts.

`snapshot` gathers the numbers (queue states, recent results, throughput, destinations) and
`render_page` draws them; every value from outside is escaped on its way in. Patient identity
appears only in results recorded under --http-show-phi (`ServeMetrics.show_phi`).
"""

from __future__ import annotations

import html
import time
from typing import Any

from edgeimg.serve.metrics import PHI_KEYWORDS, SeriesResult
from edgeimg.serve.view import established

REFRESH_SECONDS = 10
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2430; background: #f6f7f9; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #d7dbe2; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eceff3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.uid { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.ok { color: #0a7a2f; font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
.unknown { color: #6b7280; } .note { color: #6b7280; font-size: 12px; }
img.preview { max-width: 192px; display: block; }
svg { background: #fff; border: 1px solid #d7dbe2; }
"""


def snapshot(status: Any) -> dict[str, Any]:
    """Everything the page shows, read now (status: an edgeimg.serve.http.Status)."""
    metrics = status.metrics
    queue = status.queue
    health = metrics.health()
    counts = queue.forwards_by_destination()
    destinations = []
    for name in sorted(set(status.destinations) | set(counts)):
        known = health.get(name)
        destinations.append(
            {
                "name": name,
                "peer": status.destinations.get(name, "(no longer configured)"),
                "state": known.state if known else "unknown",
                "last_ok": known.last_ok if known else None,
                "last_error": known.last_error if known else None,
                "forwards": counts.get(name, {}),
            }
        )
    return {
        "title": status.title,
        "now": time.time(),
        "ready": status.readiness(),
        "totals": queue.totals(),
        "associations": established(status.listener)(),
        "recent": metrics.recent(),
        "stored_per_minute": metrics.stored_per_minute.per_minute(),
        "series_per_minute": metrics.series_per_minute.per_minute(),
        "destinations": destinations,
        "show_phi": metrics.show_phi,
        "free_bytes": status.listener.spool.free_bytes(),
    }


def render_page(data: dict[str, Any]) -> str:
    """The HTML page for a `snapshot`."""
    ready = all(data["ready"].values())
    failing = ", ".join(name for name, ok in data["ready"].items() if not ok)
    state = (
        '<span class="ok">ready</span>'
        if ready
        else (f'<span class="bad">not ready: {_e(failing)}</span>')
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>{_e(data['title'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(data['title'])}</h1>",
        f"<div>{state} &middot; {_e(_clock(data['now']))} UTC &middot; spool free "
        f"{_e(_size(data['free_bytes']))}</div>",
        _queue(data["totals"], data["associations"]),
        _throughput(data["stored_per_minute"], data["series_per_minute"]),
        _recent(data["recent"], data["show_phi"]),
        _destinations(data["destinations"]),
        '<p class="note">Results are from models not cleared for clinical use.</p>',
        "</body></html>",
    ]
    return "\n".join(parts)


def _queue(totals: dict[str, Any], associations: int) -> str:
    rows = [
        f"<tr><th>instances</th><td class='n'>{_e(totals['instances'])}</td></tr>",
        f"<tr><th>associations open</th><td class='n'>{_e(associations)}</td></tr>",
    ]
    for kind in ("series", "jobs", "forwards"):
        states = (
            ", ".join(f"{_e(state)} {_e(count)}" for state, count in sorted(totals[kind].items()))
            or "none"
        )
        rows.append(f"<tr><th>{kind}</th><td>{states}</td></tr>")
    return "<h2>Queue</h2><table id='queue'>" + "".join(rows) + "</table>"


def _throughput(stored: list[int], series: list[int]) -> str:
    """Instances stored per minute over the last hour, as bars (no script needed)."""
    width, height, bar = 600, 80, 10
    top = max(stored) or 1
    bars = "".join(
        f'<rect x="{i * bar}" y="{height - round(height * count / top)}" width="{bar - 1}" '
        f'height="{round(height * count / top)}" fill="#3b6fd8"><title>{count}</title></rect>'
        for i, count in enumerate(stored)
    )
    return (
        f"<h2>Throughput, last hour</h2><div id='throughput'>{sum(stored)} instances stored, "
        f"{sum(series)} series results (peak {max(stored)} instances a minute)</div>"
        f'<svg width="{width}" height="{height}" role="img" '
        f'aria-label="instances stored per minute">{bars}</svg>'
        f'<div class="note" style="width:{width}px">60 min ago<span style="float:right">now'
        "</span></div>"
    )


def _recent(results: list[SeriesResult], show_phi: bool) -> str:
    if not results:
        return "<h2>Recent series</h2><p id='recent'>No series processed yet.</p>"
    phi = list(PHI_KEYWORDS) if show_phi else []
    head = ["finished (UTC)", "series", "model", "finding", "instances", "seconds", *phi, "preview"]
    rows = []
    for item in results:
        cells = [
            f"<td>{_e(_clock(item.finished))}</td>",
            f"<td class='uid'>{_e(item.series_uid)}</td>",
            f"<td>{_e(item.model)}</td>",
            f"<td class='finding'>{_e(item.finding)}</td>",
            f"<td class='n'>{_e(item.instances)}</td>",
            f"<td class='n'>{item.seconds:.2f}</td>",
            *(f"<td>{_e(item.patient.get(key, ''))}</td>" for key in phi),
            f"<td><img class='preview' src='/preview/{int(item.job)}.png' alt='preview of "
            f"{_e(item.model)}'></td>"
            if item.preview
            else "<td>-</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{_e(name)}</th>" for name in head)
    return (
        f"<h2>Recent series</h2><table id='recent'><tr>{header}</tr>" + "".join(rows) + "</table>"
    )


def _destinations(destinations: list[dict[str, Any]]) -> str:
    if not destinations:
        return "<h2>Destinations</h2><p>None configured.</p>"
    rows = []
    for item in destinations:
        css = {"ok": "ok", "failing": "bad"}.get(item["state"], "unknown")
        forwards = ", ".join(f"{_e(s)} {_e(n)}" for s, n in sorted(item["forwards"].items()))
        rows.append(
            f"<tr><td>{_e(item['name'])}</td><td>{_e(item['peer'])}</td>"
            f"<td class='{css}'>{_e(item['state'])}</td><td>{forwards or 'none yet'}</td>"
            f"<td>{_e(_clock(item['last_ok']) if item['last_ok'] else '-')}</td>"
            f"<td>{_e(item['last_error'] or '-')}</td></tr>"
        )
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "destination",
            "peer",
            "health",
            "forwards",
            "last delivered (UTC)",
            "last error",
        )
    )
    return f"<h2>Destinations</h2><table id='destinations'><tr>{head}</tr>{''.join(rows)}</table>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
