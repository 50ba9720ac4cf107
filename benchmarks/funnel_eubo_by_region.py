"""Where a funnel sampler's EUBO comes from: the backward-path log-weights of exact samples, grouped by x0.

The EUBO is ``E_pi[log w]`` over paths drawn backwards from exact samples ``x ~ pi`` under the sampler's path law,
``log w = log pi(x) + log p_ref(path | x) - log q(path)``; it bounds log Z from above. On Neal's funnel
(``x0 ~ N(0, s^2)``, ``x_i | x0 ~ N(0, e^{x0})``) this table splits that mean by the value of x0: the share of the
exact samples in each band, their mean and median log w, and their contribution (share x mean) to the EUBO.

    python benchmarks/funnel_eubo_by_region.py RUN_DIR [RUN_DIR ...] [--n 20000] [--seed 7]

RUN_DIR holds ``job.json`` and ``sampler.pt`` of a finished ``controlsamp run`` on a funnel target.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from evaluate_saved import load_run

BANDS = ((-np.inf, -6.0), (-6.0, -3.0), (-3.0, 0.0), (0.0, 3.0), (3.0, 6.0), (6.0, np.inf))


def eubo_by_band(folder: str, n: int, seed: int) -> list:
    """Rows (band, share, mean log w, median log w, contribution) for the run in ``folder``."""
    job, smp = load_run(folder)
    if not job["target"].startswith("funnel"):
        raise ValueError(f"{folder}: the run's target is {job['target']!r}; this table is for funnel targets")
    x = smp.target.sample(n, generator=torch.Generator().manual_seed(seed))
    log_w = smp.eubo_log_weights(x, torch.Generator().manual_seed(seed + 1)).double().cpu().numpy()
    x0 = x[:, 0].double().cpu().numpy()
    rows = [("all", 1.0, log_w.mean(), float(np.median(log_w)), log_w.mean())]
    for lo, hi in BANDS:
        m = (x0 >= lo) & (x0 < hi)
        if m.any():
            rows.append((f"[{lo:g}, {hi:g})", m.mean(), log_w[m].mean(), float(np.median(log_w[m])),
                         log_w[m].sum() / len(log_w)))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--n", type=int, default=20000, help="exact samples")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for folder in a.runs:
        print(f"\n{folder}\n")
        print("| x0 band | share | mean log w | median log w | contribution to the EUBO |")
        print("|---|---|---|---|---|")
        for band, share, mean, median, contrib in eubo_by_band(folder, a.n, a.seed):
            print(f"| {band} | {share:.4f} | {mean:.2f} | {median:.2f} | {contrib:.2f} |")


if __name__ == "__main__":
    main()
