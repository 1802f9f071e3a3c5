"""Does a shortened schedule rank the methods as the full one does?

Reads two results stores (the full schedule's and the shortened one's, e.g. the smoke suite at
its old and new settings, run with ``--seeds 2``) and compares, per column of the table (task
and protocol), the order of the methods by their mean over the seeds both share: Kendall's tau,
whether the order is the same, and every pair of methods the two schedules put the other way
round, with the gaps and the seed-to-seed spread that explain it.

Usage: python benchmarks/schedule_ranking.py FULL_RESULTS SHORT_RESULTS [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

from benchharness.leaderboard import load_results


def column_means(results: Path) -> pd.DataFrame:
    """Per (task, protocol, method): mean, sample std and count of ``value`` over the seeds."""
    df = load_results(results)
    df = df[df["status"] == "ok"]
    return df.groupby(["task", "protocol", "method"])["value"].agg(["mean", "std", "count"])


def compare(full: pd.DataFrame, short: pd.DataFrame) -> dict[str, dict]:
    """For every column both stores fill: the two orders, Kendall's tau and the swapped pairs."""
    out = {}
    for (task, protocol), a in full.groupby(level=[0, 1]):
        if (task, protocol) not in short.droplevel(2).index:
            continue
        b = short.loc[(task, protocol)]
        a = a.droplevel([0, 1])
        methods = sorted(set(a.index) & set(b.index))
        if len(methods) < 2:
            continue
        order_a = sorted(methods, key=lambda m: -a.loc[m, "mean"])
        order_b = sorted(methods, key=lambda m: -b.loc[m, "mean"])
        tau = kendalltau([a.loc[m, "mean"] for m in methods], [b.loc[m, "mean"] for m in methods])[0]
        swapped = []
        for m, n in itertools.combinations(order_a, 2):  # m above n in the full schedule
            if b.loc[m, "mean"] < b.loc[n, "mean"]:
                swapped.append({"pair": [m, n],
                                "full_gap": round(a.loc[m, "mean"] - a.loc[n, "mean"], 2),
                                "short_gap": round(b.loc[m, "mean"] - b.loc[n, "mean"], 2),
                                "short_std": [round(float(b.loc[x, "std"]), 2) for x in (m, n)]})
        out[f"{task} {protocol}"] = {
            "same_order": order_a == order_b, "kendall_tau": round(float(tau), 3),
            "full": order_a, "short": order_b, "swapped": swapped,
            "seeds": [int(a["count"].min()), int(b["count"].min())]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", type=Path, help="results store of the full schedule")
    parser.add_argument("short", type=Path, help="results store of the shortened schedule")
    parser.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    args = parser.parse_args()
    result = compare(column_means(args.full), column_means(args.short))
    for column, c in result.items():
        print(f"{column:16s} tau {c['kendall_tau']:+.3f}  same order: {c['same_order']}  "
              f"(seeds {c['seeds'][0]} / {c['seeds'][1]})")
        print(f"{'':16s} full:  {' > '.join(c['full'])}")
        print(f"{'':16s} short: {' > '.join(c['short'])}")
        for s in c["swapped"]:
            print(f"{'':16s} swapped {s['pair'][0]} / {s['pair'][1]}: gap {s['full_gap']:+.2f} full, "
                  f"{s['short_gap']:+.2f} short (short std {s['short_std'][0]}, {s['short_std'][1]})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
