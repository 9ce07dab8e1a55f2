"""The efficiency stage's figures: time and memory against K, and the meta-gradients' error
against K; matplotlib is imported here only, and only when a figure is drawn.
"""

from __future__ import annotations

from typing import Any


def plot_time_memory(rows: list[dict[str, Any]], path: Any) -> None:
    """The Adjoint MAML paper's two panels (time and memory against K), one row per problem;
    a variant's line ends where it ran out of time or memory (marked x)."""
    import matplotlib  # not at the top: each measurement point's process would load it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (likewise)

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(len(problems), 2, figsize=(10, 3.6 * len(problems)), squeeze=False)
    for (ax_time, ax_mem), problem in zip(axes, problems, strict=True):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["problem"] == problem):
            points = [r for r in rows if (r["problem"], r["variant"]) == (problem, variant)]
            ok = [r for r in points if r["status"] == "ok"]
            ks = [r["steps"] for r in ok]
            (line,) = ax_time.plot(ks, [r["seconds"] for r in ok], marker="o", label=variant)
            ax_mem.plot(
                ks, [r["peak_bytes"] / 2**20 for r in ok], marker="o", color=line.get_color()
            )
            first_fail = next((r for r in points if r["status"] in ("oom", "timeout")), None)
            if first_fail and ok:
                ax_time.plot(
                    [first_fail["steps"]], [ok[-1]["seconds"]], "x", color=line.get_color()
                )
        if not any(r["problem"] == problem and r["status"] == "ok" for r in rows):
            ax_time.text(0.5, 0.5, "no point within its budget", ha="center",
                         transform=ax_time.transAxes)  # fmt: skip
        else:
            ax_time.set_yscale("log")
        for ax, label in ((ax_time, "seconds per meta-gradient"), (ax_mem, "peak memory (MiB)")):
            ax.set_xscale("log")
            ax.set_xlabel("inner steps K")
            ax.set_ylabel(label)
            ax.set_title(problem)
        ax_time.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(rows: list[dict[str, Any]], path: Any) -> None:
    """Relative error of each variant's meta-gradient against MAML's, against K (as the iMAML
    paper's Figure 2a), one panel per problem."""
    import matplotlib  # not at the top: each measurement point's process would load it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (likewise)

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(problems), figsize=(5.5 * len(problems), 3.8), squeeze=False)
    for ax, problem in zip(axes[0], problems, strict=True):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["problem"] == problem):
            points = [r for r in rows if (r["problem"], r["variant"]) == (problem, variant)]
            points = [r for r in points if r["status"] == "ok"]
            errs = [max(r["rel_err"], 1e-16) for r in points]  # exact variants sit on the floor
            ax.plot([r["steps"] for r in points], errs, marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("inner steps K")
        ax.set_ylabel("relative error vs exact MAML")
        ax.set_title(problem)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
