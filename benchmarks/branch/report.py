"""Figures of a run: the summary per approach, the goals, the JSON file and the PNG plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

WAN_GOAL = 1.05  # WAN bytes into a branch / package size
TIME_GOAL = 1.25  # time until every client verified / fluid lower bound


def _times(rows: list[dict[str, Any]], key: str) -> list[float]:
    return sorted(row[key] for row in rows if row.get(key) is not None)


def summarize(result: dict[str, Any], size: int, bound_s: float) -> dict[str, Any]:
    """The figures of one approach's raw result."""
    rows = result["clients"]
    verified, installed = _times(rows, "verified_s"), _times(rows, "installed_s")
    complete = len(verified) == len(rows)
    wan = {
        name: {
            "down_bytes": v["down"],
            "up_bytes": v["up"],
            "down_copies": round(v["down"] / size, 4),
            "both_copies": round((v["down"] + v["up"]) / size, 4),
        }
        for name, v in result["wan"]["branches"].items()
    }
    lags = [row["installed_s"] - row["verified_s"] for row in rows if row.get("installed_s") is not None and row.get("verified_s") is not None]
    summary = {
        "clients": len(rows),
        "verified": len(verified),
        "installed": len(installed),
        "all_verified_s": verified[-1] if complete and verified else None,
        "all_installed_s": installed[-1] if len(installed) == len(rows) and installed else None,
        "median_verified_s": statistics.median(verified) if verified else None,
        "median_installed_s": statistics.median(installed) if installed else None,
        "sms_lag_mean_s": round(statistics.fmean(lags), 3) if lags else None,
        "sms_lag_max_s": round(max(lags), 3) if lags else None,
        "wan": wan,
        "max_wan_down_copies": max((v["down_copies"] for v in wan.values()), default=None),
        "hq_out_copies": round(result["wan"]["hq_out"] / size, 4),
        "from_peers_bytes": sum(row.get("from_peers", 0) for row in rows),
        "from_webseed_bytes": sum(row.get("from_webseed", 0) for row in rows),
        "dp_copies": round(result["dp_bytes_total"] / size, 4),
        "timed_out": result.get("timed_out", False),
    }
    summary["verified_over_bound"] = round(summary["all_verified_s"] / bound_s, 3) if summary["all_verified_s"] else None
    summary["installed_over_bound"] = round(summary["all_installed_s"] / bound_s, 3) if summary["all_installed_s"] else None
    return summary


def goals(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The three goals of p2pdist, each None when the run lacks what it needs."""
    ours = summaries.get("p2pdist")
    if not ours:
        return {}
    out: dict[str, Any] = {
        "wan_copies_le_1.05": None if ours["max_wan_down_copies"] is None else ours["max_wan_down_copies"] <= WAN_GOAL,
        "time_le_1.25_bound": None if ours["verified_over_bound"] is None else ours["verified_over_bound"] <= TIME_GOAL,
    }
    ref = summaries.get("libtorrent")
    if ref:
        wan_better = ours["max_wan_down_copies"] is not None and (
            ref["max_wan_down_copies"] is None or ours["max_wan_down_copies"] < ref["max_wan_down_copies"]
        )
        time_better = ours["all_verified_s"] is not None and (ref["all_verified_s"] is None or ours["all_verified_s"] < ref["all_verified_s"])
        out["better_than_libtorrent"] = {"wan": wan_better, "time": time_better}
    return out


def one_line(report: dict[str, Any]) -> str:
    bound = report["bound"]["seconds"]
    parts = [f"branch {report['params']['branches']}x{report['params']['clients']} {report['params']['size_mib']:g} MiB WAN {report['params']['wan_mbit']:g} Mbit/s: bound {bound:.1f} s"]
    for name, s in report["summary"].items():
        t = f"{s['all_verified_s']:.1f} s ({s['verified_over_bound']:.2f}x)" if s["all_verified_s"] else f"incomplete ({s['verified']}/{s['clients']})"
        inst = f", installed {s['all_installed_s']:.1f} s" if name == "p2pdist" and s["all_installed_s"] else ""
        wan = f"{s['max_wan_down_copies']:.2f}" if s["max_wan_down_copies"] is not None else "-"
        parts.append(f"{name} all verified {t}{inst}, WAN {wan} copies/branch")
    return "; ".join(parts)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))


COLORS = {"p2pdist": "tab:blue", "libtorrent": "tab:orange", "http": "tab:gray"}


def plot(report: dict[str, Any], path: Path) -> None:
    """Completion-time CDF per approach (left) and WAN copies per branch per approach (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bound = report["bound"]["seconds"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, raw in report["approaches"].items():
        rows = raw["clients"]
        n = len(rows)
        for key, style, label in (("verified_s", "-", "verified"), ("installed_s", "--", "installed (SMS)")):
            if name != "p2pdist" and key == "installed_s":
                continue
            times = _times(rows, key)
            if not times:
                continue
            xs = [0.0] + times
            ys = [0.0] + [(i + 1) / n for i in range(len(times))]
            left.step(xs, ys, where="post", linestyle=style, color=COLORS.get(name), label=f"{name} {label}")
    left.axvline(bound, color="black", linewidth=1, label=f"fluid bound {bound:.1f} s")
    left.axvline(bound * TIME_GOAL, color="black", linewidth=1, linestyle=":", label=f"{TIME_GOAL} x bound")
    left.set_xlabel("seconds after the SMS start")
    left.set_ylabel("fraction of clients")
    left.set_ylim(0, 1.02)
    left.set_title("time to the verified package")
    left.legend(fontsize=8, loc="lower right")
    names = list(report["summary"])
    branches = sorted({b for s in report["summary"].values() for b in s["wan"]})
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        wan = report["summary"][name]["wan"]
        xs = [j + i * width for j in range(len(branches))]
        ys = [wan.get(b, {}).get("down_copies", 0) for b in branches]
        bars = right.bar(xs, ys, width=width, color=COLORS.get(name), label=name)
        right.bar_label(bars, fmt="%.2f", fontsize=8)
    right.axhline(WAN_GOAL, color="black", linewidth=1, linestyle=":", label=f"goal {WAN_GOAL} copies")
    right.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(branches))], branches)
    right.set_ylabel("WAN bytes into the branch / package size")
    right.set_ylim(0, None)
    right.set_title("package copies over each WAN link")
    right.legend(fontsize=8)
    p = report["params"]
    fig.suptitle(
        f"{p['branches']} branches x {p['clients']} clients, {p['size_mib']:g} MiB, WAN {p['wan_mbit']:g} Mbit/s, "
        f"LAN {p['lan_mbit']:g} Mbit/s, HQ uplink {p['hq_mbit']:g} Mbit/s"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
