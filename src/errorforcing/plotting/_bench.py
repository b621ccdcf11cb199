"""The `bench --scaling` figure: cost per member-epoch against N, members and T."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")


def plot_scaling(results: dict, path: str) -> None:
    """Seconds per member-epoch against N, members and T (log-log), one panel per axis; each
    panel's points are the rows where only that axis differs from the base."""
    import matplotlib.pyplot as plt

    rows = results["rows"]
    base = rows[0]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    for ax, axis in zip(axes, ("hidden", "members", "T")):
        others = [k for k in ("hidden", "members", "T") if k != axis]
        pts = sorted((r[axis], r["seconds_per_member_epoch"], r["peak_rss_gib"]) for r in rows
                     if all(r[o] == base[o] for o in others))
        xs, ts, mem = zip(*pts)
        ax.loglog(xs, ts, "o-", color="C0")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel({"hidden": "N (hidden units)", "members": "members", "T": "T (steps)"}[axis])
        ax.set_ylabel("s per member-epoch", color="C0")
        twin = ax.twinx()
        twin.plot(xs, mem, "s--", color="C1")
        twin.set_ylabel("peak GiB (process)", color="C1")
        ax.set_title(", ".join(f"{o}={base[o]}" for o in others), fontsize=9)
    d = results["device"]
    fig.suptitle(f"errorforcing bench --scaling ({d['platform']}, {d['device_kind']})", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
