"""Throughput of data-parallel training (controlsamp.parallel) against the number of processes (issue 19).

For each configuration and each process count W, W gloo processes (one intra-op thread each) train the same sampler
on the same batch, split into W random shards (``fit(shards=W)``), for ``--warmup`` + ``--iters`` iterations; the
figure is the median seconds per iteration over the timed ones (rank 0's ``history["seconds"]``: the whole step,
gradient all-reduce included) and the paths per second it implies. Two one-process references sit next to it:
W = 1 with one shard (the plain run) and W = 1 with ``--shards-ref`` shards (what sharding itself costs, with no
communication).

Configurations: DDS with the log-variance loss and PIS with trajectory balance + exploration + buffer + local search
(Sendera et al.'s off-policy setting), on funnel10 and manywell32, 100 steps, batch ``--batch``.

    python benchmarks/parallel.py --procs 1 2 --iters 30 --out benchmarks/results/parallel/cpu.json

Each process count is a fresh set of processes started with ``torch.multiprocessing`` (rendezvous through a file),
so a process count larger than the machine's cores measures oversubscription, not scaling.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CONFIGS = {
    "dds-lv": dict(sampler="DDS", fit=dict(loss="lv")),
    "pis-tb+expl+ls": dict(sampler="PIS", fit=dict(loss="tb", explore=1.0, buffer=20000, local_search_every=10)),
}
TARGETS = ("funnel10", "manywell32")


def _measure(config: str, target: str, batch: int, steps: int, iters: int, warmup: int, shards: int,
             device: str) -> dict:
    import controlsamp as cs
    cls = getattr(cs.samplers, CONFIGS[config]["sampler"])
    s = cls(cs.targets.get(target), steps=steps, sigma=1.0, seed=0, device=device)
    t0 = time.perf_counter()
    s.fit(iters=warmup + iters, batch=batch, seed=0, progress=False, shards=shards, **CONFIGS[config]["fit"])
    wall = time.perf_counter() - t0
    sec = s.history["seconds"][warmup:]
    return dict(config=config, target=target, batch=batch, steps=steps, shards=shards, iters=iters,
                s_per_iter=statistics.median(sec), wall_s=wall, loss_last=s.history["loss"][-1])


def _worker(rank: int, world: int, init: str, out: str, jobs: list) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        res = [_measure(**job) for job in jobs]
        if rank == 0:
            with open(out, "w") as f:
                json.dump(res, f)
    finally:
        if world > 1:
            dist.destroy_process_group()


def run(world: int, jobs: list) -> list:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.json")
        mp.start_processes(_worker, args=(world, "file://" + os.path.join(d, "rdv"), out, jobs), nprocs=world,
                           start_method="spawn", join=True)
        with open(out) as f:
            return json.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--targets", nargs="+", default=list(TARGETS))
    p.add_argument("--batch", type=int, default=300)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--shards-ref", type=int, default=2, help="shards of the one-process sharding reference")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    rows = []
    for config in args.configs:
        for target in args.targets:
            base = dict(config=config, target=target, batch=args.batch, steps=args.steps, iters=args.iters,
                        warmup=args.warmup, device=args.device)
            plan = [(1, 1)] + ([(1, args.shards_ref)] if args.shards_ref > 1 else []) + \
                [(w, w) for w in args.procs if w > 1]
            for world, shards in plan:
                res = run(world, [dict(base, shards=shards)])[0]
                res.update(processes=world, paths_per_s=args.batch / res["s_per_iter"])
                rows.append(res)
                print(f"{config:16s} {target:11s} processes {world} shards {shards}: "
                      f"{res['s_per_iter'] * 1e3:8.1f} ms/iter  {res['paths_per_s']:8.0f} paths/s", flush=True)
    for config in args.configs:
        for target in args.targets:
            one = next(r for r in rows if r["config"] == config and r["target"] == target and r["processes"] == 1
                       and r["shards"] == 1)
            for r in rows:
                if r["config"] == config and r["target"] == target:
                    r["speedup"] = one["s_per_iter"] / r["s_per_iter"]
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(dict(argv=sys.argv[1:], torch=torch.__version__, cpus=os.cpu_count(), rows=rows), f, indent=1)
    print("\n| config | target | processes | shards | ms / iteration | paths / s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['target']} | {r['processes']} | {r['shards']} | {r['s_per_iter'] * 1e3:.1f} | "
              f"{r['paths_per_s']:.0f} | {r['speedup']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
