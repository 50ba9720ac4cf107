"""Training iterations per second on the CPU (one thread) and on a CUDA GPU, against the batch size (issue 19).

Configurations (public API only: ``cs.samplers.PIS/DDS(target, steps=100, hidden=64, depth=2, device=...)``,
``.fit(iters=, batch=, loss=, progress=False)``):

* ``pis-tb-funnel10``   PIS, trajectory balance, on funnel10 (d = 10);
* ``dds-lv-manywell32`` DDS, log-variance loss, on manywell32 (d = 32).

Both with 100 steps and the package's default Langevin parametrisation. For each device and batch size (paths
per iteration: 300, 1000, 3000, 10000 by default; the CPU stops at 3000 unless ``--cpu-all``) the sampler is
built, ``--warmup`` iterations run untimed (the first CUDA call initialises the context and cuBLAS), then
``--iters`` iterations are timed as one ``fit`` call, with ``torch.cuda.synchronize()`` before and after so
that queued kernels are counted. Reported: iterations per second, seconds per iteration, paths per second and,
on CUDA, the peak memory allocated.

    python benchmarks/gpu_speed.py --device cuda --out gpu_speed.json   # the GPU figures (gpu_check.sh)
    python benchmarks/gpu_speed.py --device cpu cuda                    # both, for the speed-up
    python benchmarks/gpu_speed.py --device cpu --iters 3 --batches 64  # a smoke run on any machine
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the tree holding this script, ahead of an installed copy

import torch  # noqa: E402

import controlsamp as cs  # noqa: E402

CONFIGS = {
    "pis-tb-funnel10": dict(sampler="PIS", target="funnel10", loss="tb"),
    "dds-lv-manywell32": dict(sampler="DDS", target="manywell32", loss="lv"),
}
NET = dict(steps=100, hidden=64, depth=2)
BATCHES = (300, 1000, 3000, 10000)
CPU_MAX_BATCH = 3000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, device: torch.device, batch: int, iters: int, warmup: int, seed: int = 0) -> dict:
    """One configuration at one batch size on one device: warm-up, then ``iters`` timed iterations."""
    cfg = CONFIGS[name]
    smp = getattr(cs.samplers, cfg["sampler"])(cs.targets.get(cfg["target"]), device=device, seed=seed, **NET)
    fit = dict(batch=batch, loss=cfg["loss"], seed=seed, progress=False)
    if warmup:
        smp.fit(iters=warmup, **fit)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    smp.fit(iters=iters, **fit)
    _sync(device)
    dt = time.perf_counter() - t0
    loss = smp.history["loss"][-1]
    out = dict(config=name, device=str(device), batch=batch, iters=iters, warmup=warmup, seconds=dt,
               it_per_s=iters / dt, s_per_it=dt / iters, paths_per_s=batch * iters / dt, final_loss=float(loss))
    if device.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


def environment() -> dict:
    env = dict(torch=torch.__version__, cuda_build=torch.version.cuda, python=platform.python_version(),
               cpu_threads=torch.get_num_threads(), controlsamp=cs.__file__)
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", nargs="+", default=["cpu", "cuda"],
                   help="devices to measure (cpu, cuda, cuda:N); cuda is skipped with a note where there is no GPU "
                        "unless it is the only device asked for")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations before the timing")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="paths per iteration")
    p.add_argument("--cpu-all", action="store_true", help=f"measure the CPU above batch {CPU_MAX_BATCH} too")
    p.add_argument("--cpu-iters", type=int, default=None,
                   help="timed iterations on the CPU (default --iters; the CPU is 10-100x slower per iteration)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", default=None, help="write the figures and the environment to this JSON file")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or min(args.batches) < 1:
        p.error("--iters and --batches must be positive, --warmup non-negative")
    devices = []
    for d in args.device:
        if d.startswith("cuda") and not torch.cuda.is_available() and len(args.device) > 1:
            print(f"note: no CUDA GPU here; skipping {d}", file=sys.stderr)
            continue
        try:
            devices.append(cs._validate.check_device(d, "--device"))
        except ValueError as exc:
            p.error(str(exc))
    torch.set_num_threads(1)  # the CPU figures are for one thread (the package's default)
    env = environment()
    print(f"torch {env['torch']} (CUDA build {env['cuda_build']}), {env.get('gpu', 'no GPU')}, "
          f"CPU threads {env['cpu_threads']}", flush=True)
    rows = []
    header = f"{'config':20s} {'device':8s} {'batch':>6s} {'it/s':>9s} {'s/it':>9s} {'paths/s':>11s} {'peak MB':>8s}"
    print(header)
    print("-" * len(header), flush=True)
    for name in args.configs:
        for device in devices:
            for batch in args.batches:
                if device.type == "cpu" and batch > CPU_MAX_BATCH and not args.cpu_all:
                    continue
                iters = args.cpu_iters if (device.type == "cpu" and args.cpu_iters) else args.iters
                r = measure(name, device, batch, iters, args.warmup)
                rows.append(r)
                mem = f"{r['peak_mem_mb']:8.0f}" if "peak_mem_mb" in r else f"{'-':>8s}"
                print(f"{name:20s} {str(device):8s} {batch:6d} {r['it_per_s']:9.2f} {r['s_per_it']:9.4f} "
                      f"{r['paths_per_s']:11.0f} {mem}", flush=True)
    speedups = []
    for r in rows:
        if r["device"].startswith("cuda"):
            cpu = [c for c in rows if c["device"] == "cpu" and c["config"] == r["config"] and c["batch"] == r["batch"]]
            if cpu:
                speedups.append(dict(config=r["config"], batch=r["batch"], speedup=r["it_per_s"] / cpu[0]["it_per_s"]))
    for s in speedups:
        print(f"speed-up {s['config']} batch {s['batch']}: {s['speedup']:.1f}x (GPU over one CPU thread)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(dict(environment=env, settings=dict(vars(args), net=NET), results=rows, speedups=speedups),
                      f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
