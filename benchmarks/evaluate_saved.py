"""Evaluate a finished ``controlsamp run`` again from its saved sampler, with more evaluation paths.

Sendera et al. 2024 measure log Z and the ELBO on 10 000 paths (their code's final evaluation), ``controlsamp run``
on 2000 by default. The ELBO (a mean) is unbiased either way, but the importance-weighted estimate log mean w is
biased low by Jensen's inequality, the more so the fewer paths: compare RW gaps at equal path counts.

    python benchmarks/evaluate_saved.py RUN_DIR [RUN_DIR ...] --n-eval 10000

RUN_DIR holds ``job.json`` and ``sampler.pt`` of a finished run. Prints the ELBO gap with its standard error, the
RW gap with the log Z standard error and the ESS per run (evaluation seed 12345 + the run's seed, as ``controlsamp
run``). ``--write`` also saves them as ``metrics-n{N}.json`` in RUN_DIR.
"""
from __future__ import annotations

import argparse
import json
import os

from controlsamp import samplers, train


def load_run(folder: str):
    """``(job, sampler)``: the job.json of the finished run in ``folder`` and its trained sampler."""
    with open(os.path.join(folder, "job.json")) as f:
        job = json.load(f)
    tgt = train.make_target(job["target"], job["dim"] if train.dim_is_parameter(job["target"]) else None)
    cls = samplers.get(job["sampler"])
    smp = cls(tgt, steps=job["steps"], sigma=job["sigma"], seed=job["seed"], **job.get("sampler_options", {}))
    smp.load(os.path.join(folder, "sampler.pt"))
    return job, smp


def evaluate_run(folder: str, n_eval: int) -> dict:
    job, smp = load_run(folder)
    sinkhorn_eps = train.target_settings(job["target"])["sinkhorn_eps"]
    m, _ = train.evaluate(smp, n=n_eval, seed=job["seed"] + 12345, n_ot=2000, sinkhorn_eps=sinkhorn_eps)
    return m


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--n-eval", type=int, default=10000)
    p.add_argument("--write", action="store_true")
    a = p.parse_args(argv)
    print("| run | paths | dlogZ (ELBO) | ELBO se | dlogZ (RW) | log Z se | ESS |")
    print("|---|---|---|---|---|---|---|")
    for folder in a.runs:
        m = evaluate_run(folder, a.n_eval)
        if a.write:
            train.write_json(os.path.join(folder, f"metrics-n{a.n_eval}.json"), m)
        print(f"| {os.path.basename(os.path.normpath(folder))} | {a.n_eval} | {m['delta_log_Z']:.3f} | "
              f"{m['elbo_se']:.3f} | {m['delta_log_Z_rw']:.3f} | {m['log_Z_se']:.3f} | {m['ess']:.4f} |")


if __name__ == "__main__":
    main()
