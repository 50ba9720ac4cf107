"""Sampler benchmark: Delta log Z (ELBO and importance-weighted), W2, ESS, energy evaluations and wall time
for PIS and DDS with each loss on the standard targets, over seeds, as a markdown table.

Every row is a `controlsamp run` job (controlsamp.train.run_job); the table prints the mean +- standard
deviation over seeds and the command that reproduces one seed of the row.

    python benchmarks/samplers.py --targets gmm25 funnel10 manywell32 --seeds 0 1 2 --iters 500

Finished runs are skipped (their metrics.json is read back), so a run can be continued; the committed
results of the issue-4 benchmark are in benchmarks/results/samplers (``--out`` there continues them,
``--report`` prints the finished rows without training).
"""
import argparse
import json
import os
import time

import numpy as np
import torch

from controlsamp import langevin, metrics, samplers, targets, train

# name: (sampler, loss, fit options). "tb+expl+ls": trajectory balance with exploration, a replay
# buffer with backward paths and MALA local search (Sendera et al. 2024's best configuration).
OFF_POLICY = dict(explore=1.0, buffer=20000, local_search_every=10)
CONFIGS = {
    "pis-kl": ("pis", "kl", {}),
    "pis-lv": ("pis", "lv", {}),
    "pis-tb": ("pis", "tb", {}),
    "pis-vargrad": ("pis", "vargrad", {}),
    "pis-tb+expl+ls": ("pis", "tb", OFF_POLICY),
    "dds-kl": ("dds", "kl", {}),
    "dds-lv": ("dds", "lv", {}),
    "dds-tb": ("dds", "tb", {}),
    "dds-vargrad": ("dds", "vargrad", {}),
    "dds-tb+expl+ls": ("dds", "tb", OFF_POLICY),
    # Monte Carlo baselines at no more than the diffusion rows' budget (iters x batch x steps target
    # evaluations): SMC with 2000 particles, adaptive tempering at conditional ESS 0.999 and 20 MALA
    # moves per temperature; MALA with 2000 chains, half the budget as warm-up (each chain adapts its
    # own step), the last state kept.
    "smc": ("smc", None, dict(target_ess=0.999, n_mcmc=20)),
    "mala": ("mala", None, {}),
    # ASBS (adjoint matching + corrector matching) at the diffusion rows' iterations, batch and steps: it
    # evaluates the target only at the paths' ends, so it spends far fewer evaluations (its row says how many)
    "asbs": ("asbs", "am", {}),
    # DiKL (one-step generator, reverse diffusive KL) at the diffusion rows' energy budget iters x batch x
    # steps: its iterations are that budget over its evaluations per step (settings in DIKL below)
    "dikl": ("dikl", None, {}),
}

# DiKL per target, after the authors' configs (He et al. 2024; the DiKL repository's configs/*.yaml, read from the
# copy at github.com/himchan00/DiKL):
# their DDPM schedule of 30 steps with betas linear from `start` to `end` becomes the continuous VP of rate
# 30 * start -> 30 * end on [0, 1], whose levels k / 30 (k = 2..30) are theirs up to exp(-sum beta) against
# prod (1 - beta); weights 1/alpha on MoG-40 and MW-32, uniform on DW-4 and LJ-13; one random level per latent.
# Differences (cost on 2 CPU cores): batch 256 (theirs 1024 / 256), 10 score steps per generator step (theirs 50
# / 100), 8 importance draws each followed by 10 MALA steps averaged over the last 5 (theirs: AIS or IS then 5
# to 1000 Langevin steps), generators of width 256 (theirs 400) and EGNNs of 4 layers of 64 (theirs 8 of 144),
# an MLP score model everywhere (theirs an EGNN on particles); as theirs: generator gradients clipped at norm 10,
# Adam at 1e-3 (score model: ours 1e-3, theirs 1e-4); particle targets in centre-of-mass-free
# coordinates (EGNNGenerator(output="com_free"): the same law as their mean-centred noise).
DIKL_COMMON = dict(levels=29, t_min=2 / 30, t_max=1.0, level_sampling="random", inner_steps=10, score_hidden=256,
                   score_depth=3, posterior_particles=8, mala_steps=10)
DIKL_BATCH = 256
DIKL = {
    "gmm40": dict(beta_min=0.003, beta_max=15.0, weighting="1/alpha", hidden=256, depth=3),
    "manywell32": dict(beta_min=0.003, beta_max=3.0, weighting="1/alpha", hidden=256, depth=3),
    "dw4_com_free": dict(beta_min=3e-5, beta_max=0.6, weighting="uniform", egnn=(4, 2)),
    "lj13_com_free": dict(beta_min=3e-5, beta_max=1.5, weighting="uniform", egnn=(13, 3)),
}
MC_PARTICLES = 2000

# Targets without exact samples or log Z (particle systems): reference samples from long MALA runs
# (per-chain step adaptation: one global step is dragged down by the few chains that start with
# overlapping or distant particles) and a reference log Z from large SMC runs, built once and kept in
# REFERENCE_DIR. Settings: chains / samples, warm-up and frozen moves, SMC particles and seeds.
REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "reference")
REFERENCES = {"dw4_com_free": dict(n=4000, warmup=4000, moves=6000, start_std=2.0, smc_particles=20000,
                                   smc_seeds=(100, 101, 102)),
              # lj13: 28 us per float64 evaluation here, so fewer SMC particles; from std 1 a pilot of 400
              # chains had 1% stuck at energies above 1e4 after 1500 + 1500 moves and none after 3000 + 3000
              "lj13_com_free": dict(n=4000, warmup=4000, moves=6000, start_std=1.0, smc_particles=2000,
                                    smc_seeds=(100, 101, 102))}
COLUMNS = [("delta_log_Z", "dlogZ (ELBO)"), ("delta_log_Z_rw", "dlogZ (RW)"), ("w2", "W2"), ("ess", "ESS"),
           ("target_evals", "energy evals"), ("wall_time_s", "train s")]
PARTICLE_COLUMNS = [("energy_w2", "energy W2"), ("distance_w2", "distance W2"), ("energy_tv", "energy TV"),
                    ("distance_tv", "distance TV"), ("aligned_w2", "aligned W2")]


def command(target, config, a, seed, out):
    sampler, loss, opts = CONFIGS[config]
    if sampler in ("smc", "dikl"):
        return (f"python benchmarks/samplers.py --targets {target} --configs {config} --seeds {seed} "
                f"--iters {a.iters} --batch {a.batch} --steps {a.steps} --out {out}")
    if sampler == "mala":
        return command(target, "smc", a, seed, out).replace("--configs smc", "--configs mala")
    cmd = (f"controlsamp run --target {target} --sampler {sampler} --loss {loss} --iters {a.iters} "
           f"--batch {a.batch} --steps {a.steps} --seed {seed} --lr-schedule cosine --out {out}")
    if opts:
        cmd += f" --explore {opts['explore']} --buffer {opts['buffer']} --local-search-every {opts['local_search_every']}"
    if target in REFERENCES:
        cmd += f" --reference {reference_path(target)}"
    return cmd


class _Chains:
    """MALA's last states behind the sampler API that train.evaluate reads (no weights: no log Z)."""

    def __init__(self, target, x):
        self.target, self.x, self.device, self.dtype, self.target_evals = target, x, torch.device("cpu"), x.dtype, 0

    def sample(self, n, seed=0):
        return self.x[:n], torch.zeros(min(n, len(self.x)), dtype=torch.float64)


def reference_path(target, k=0):
    """Where reference sample set k of ``target`` is kept, relative to the working directory."""
    return os.path.relpath(os.path.join(REFERENCE_DIR, f"{target}-mala{k}.npy"))


def reference(target):
    """(samples path, log Z reference dict) for a target in REFERENCES; built on the first call.

    Samples: the final states of ``n`` independent MALA chains from N(0, start_std^2 I) after ``warmup``
    adaptive and ``moves`` frozen moves (seed 0); a second set (seed 1) is kept to measure the noise
    floor of every W2 column (two reference sets of the evaluation's size against each other).
    log Z: the mean and standard error of SMC estimates (``smc_particles`` particles, one per seed).
    """
    cfg = REFERENCES[target]
    os.makedirs(REFERENCE_DIR, exist_ok=True)
    paths = [reference_path(target, k) for k in (0, 1)]
    info_path = os.path.join(REFERENCE_DIR, f"{target}.json")
    if os.path.exists(info_path) and all(os.path.exists(q) for q in paths):
        with open(info_path) as fh:
            return paths[0], json.load(fh)
    tgt = targets.get(target)
    info = dict(cfg, smc_seeds=list(cfg["smc_seeds"]))
    t0 = time.perf_counter()
    for k, q in enumerate(paths):
        x0 = cfg["start_std"] * torch.randn(cfg["n"], tgt.dim, generator=torch.Generator().manual_seed(k),
                                            dtype=torch.float64)
        res = langevin.run_chains(tgt, x0, 1, step_size=torch.full((cfg["n"],), 0.1, dtype=torch.float64),
                                  warmup=cfg["warmup"], thin=cfg["moves"], seed=k)
        np.save(q, res.draws[:, -1].numpy())
        info[f"mala{k}_accept"] = float(res.accept_prob.mean())
    info["mala_s"] = time.perf_counter() - t0
    ests = []
    for sd in cfg["smc_seeds"]:
        smp = samplers.SMC(tgt, n_particles=cfg["smc_particles"], sigma=cfg["start_std"], seed=sd,
                           target_ess=0.999, n_mcmc=20)
        _, lw = smp.sample(cfg["smc_particles"], seed=sd)
        ests.append(float(metrics.logmeanexp(lw, 0)))
    info.update(log_Z_ref=float(np.mean(ests)), log_Z_ref_se=float(np.std(ests, ddof=1) / np.sqrt(len(ests))),
                log_Z_smc=ests)
    a, b = np.load(paths[0]), np.load(paths[1])
    m = min(MC_PARTICLES, len(a))
    floor, _ = train.evaluate(_Chains(tgt, torch.from_numpy(a[:m])), n=m, reference=torch.from_numpy(b[:m]),
                              sinkhorn_eps=train.TARGET_DEFAULTS[target]["sinkhorn_eps"])
    info["floor"] = {k: floor[k] for k in ("w2", "energy_w2", "distance_w2", "aligned_w2") if k in floor}
    with open(info_path, "w") as fh:
        json.dump(info, fh, indent=2, sort_keys=True)
    return paths[0], info


def against_reference(m, target):
    """Delta log Z columns against the reference log Z of a target without a known one."""
    _, info = reference(target)
    m["log_Z_ref"], m["log_Z_ref_se"] = info["log_Z_ref"], info["log_Z_ref_se"]
    if "elbo" in m:
        m["delta_log_Z"] = abs(m["elbo"] - info["log_Z_ref"])
    if "log_Z" in m:
        m["delta_log_Z_rw"] = abs(m["log_Z"] - info["log_Z_ref"])
    return m


def mc_job(target, config, a, seed, out):
    """An SMC or MALA row at the budget iters x batch x steps; writes metrics.json like run_job."""
    sampler, _, opts = CONFIGS[config]
    budget = a.iters * a.batch * a.steps
    tgt = targets.get(target)
    defaults = train.TARGET_DEFAULTS[target]
    sigma = defaults.get("mc_sigma", defaults["sigma"])
    ref = torch.from_numpy(np.load(reference(target)[0])) if target in REFERENCES else None
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    if sampler == "smc":
        smp = samplers.SMC(tgt, n_particles=MC_PARTICLES, sigma=sigma, seed=seed, **opts)
        m, _ = train.evaluate(smp, n=MC_PARTICLES, seed=seed + 12345, sinkhorn_eps=defaults["sinkhorn_eps"],
                              reference=ref)
        m.update(target_evals=smp.last.target_evals, n_temps=len(smp.last.betas) - 1)
    else:
        moves = budget // MC_PARTICLES
        x0 = sigma * torch.randn(MC_PARTICLES, tgt.dim, generator=torch.Generator().manual_seed(seed),
                                 dtype=torch.float64)
        res = langevin.run_chains(tgt, x0, 1, method="mala",
                                  step_size=torch.full((MC_PARTICLES,), 0.1, dtype=torch.float64),
                                  warmup=moves // 2, thin=moves - moves // 2, seed=seed)
        m, _ = train.evaluate(_Chains(tgt, res.draws[:, -1]), n=MC_PARTICLES, seed=seed + 12345,
                              sinkhorn_eps=defaults["sinkhorn_eps"], reference=ref)
        for k in ("log_Z", "log_Z_se", "elbo", "ess", "delta_log_Z", "delta_log_Z_rw"):
            m.pop(k, None)
        m.update(target_evals=res.target_evals, accept=float(res.accept_prob.mean()), step_size=float(res.step_size.median()))
    m.update(wall_time_s=time.perf_counter() - t0, target=target, config=config, seed=seed, sigma=sigma,
             budget=budget, iters=a.iters, batch=a.batch, steps=a.steps, options=opts)
    if target in REFERENCES:
        against_reference(m, target)
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(m, fh, indent=2, sort_keys=True)
    return m


def dikl_job(target, a, seed, out):
    """A DiKL row at the energy budget iters x batch x steps (settings in DIKL); writes metrics.json like
    run_job (sample metrics only: a one-step generator has no importance weights, so no log Z)."""
    settings = dict(DIKL_COMMON, **DIKL[target])
    tgt = targets.get(target)
    egnn = settings.pop("egnn", None)
    generator = None
    if egnn is not None:
        torch.manual_seed(seed)
        generator = samplers.EGNNGenerator(*egnn, hidden=64, layers=4, output="com_free")
        settings.update(latent_dim=egnn[0] * egnn[1])
    model = samplers.DiKL(tgt, generator=generator, seed=seed, **settings)
    per_step = DIKL_BATCH * model.particles * (1 + model.mala_steps)
    budget = a.iters * a.batch * a.steps
    iters = max(budget // per_step, 1)
    os.makedirs(out, exist_ok=True)
    model.fit(iters=iters, batch=DIKL_BATCH, seed=seed, grad_clip=10.0, checkpoint=os.path.join(out, "checkpoint.pt"),
              resume=os.path.exists(os.path.join(out, "checkpoint.pt")), progress=False)
    wall = model.wall_time_s
    defaults = train.TARGET_DEFAULTS[target]
    ref = torch.from_numpy(np.load(reference(target)[0])) if target in REFERENCES else None
    m, x = train.evaluate(model, n=MC_PARTICLES, seed=seed + 12345, sinkhorn_eps=defaults["sinkhorn_eps"],
                          reference=ref)
    np.save(os.path.join(out, "samples.npy"), x.detach().cpu().numpy())
    m.update(target_evals=model.target_evals, wall_time_s=wall, target=target, config="dikl", seed=seed,
             budget=budget, iters=a.iters, batch=a.batch, steps=a.steps, dikl_iters=iters, dikl_batch=DIKL_BATCH,
             options={k: v for k, v in model.config.items() if k != "score"},
             final_fisher=float(np.mean(model.history["fisher"][-20:])))
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(m, fh, indent=2, sort_keys=True)
    return m


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=["gmm25", "funnel10", "manywell32"])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--batch", type=int, default=300)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--report", action="store_true", help="print the rows whose seeds all finished; train nothing")
    a = p.parse_args()
    torch.set_num_threads(1)
    columns = COLUMNS + (PARTICLE_COLUMNS if any(t in REFERENCES for t in a.targets) else [])
    print(f"| target | config | {' | '.join(c for _, c in columns)} | command (seed {a.seeds[0]}) |")
    print("|---|---|" + "---|" * len(columns) + "---|")
    for target in a.targets:
        for config in a.configs:
            sampler, loss, opts = CONFIGS[config]
            rows = []
            for seed in a.seeds:
                out = os.path.join(a.out, f"{target}-{config}-s{seed}")
                path = os.path.join(out, "metrics.json")
                if os.path.exists(path):
                    with open(path) as fh:
                        m = json.load(fh)
                    if m.get("iters") == a.iters and m.get("batch") == a.batch and m.get("steps") == a.steps:
                        rows.append(m)
                        continue
                if a.report:  # print what is there, train nothing
                    continue
                t0 = time.perf_counter()
                try:
                    if sampler == "dikl":
                        m = dikl_job(target, a, seed, out)
                    elif loss is None:
                        m = mc_job(target, config, a, seed, out)
                    else:
                        m = train.run_job(target=target, sampler=sampler, loss=loss, iters=a.iters, batch=a.batch,
                                          steps=a.steps, seed=seed, out=out, progress=False,
                                          fit_options=dict(opts, lr_schedule="cosine"),
                                          reference=reference(target)[0] if target in REFERENCES else None)
                    if target in REFERENCES and sampler != "dikl":  # Delta log Z against the reference's; rewrite
                        with open(path, "w") as fh:
                            json.dump(against_reference(m, target), fh, indent=2, sort_keys=True)
                except ValueError as exc:  # a diverged run is a result too: report it
                    m = {"error": str(exc)[:120]}
                m["job_s"] = time.perf_counter() - t0
                rows.append(m)
            if len(rows) < len(a.seeds):
                continue  # --report: not all seeds finished
            ok = [r for r in rows if "error" not in r]
            cells = []
            for key, _ in columns:
                vals = np.array([r[key] for r in ok if key in r], dtype=float)
                if len(vals) == 0:
                    cells.append("-")
                elif key == "target_evals":
                    cells.append(f"{vals.mean():.2e}")
                else:
                    cells.append(f"{vals.mean():.3f} ± {vals.std():.3f}")
            fails = len(rows) - len(ok)
            name = config + (f" ({fails} of {len(rows)} diverged)" if fails else "")
            print(f"| {target} | {name} | {' | '.join(cells)} | `{command(target, config, a, a.seeds[0], 'DIR')}` |",
                  flush=True)


if __name__ == "__main__":
    main()
