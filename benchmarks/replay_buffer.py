"""Milliseconds per ``add`` and per ``sample`` of the off-policy replay buffer
(``controlsamp.samplers.offpolicy.ReplayBuffer``) against its capacity, for this tree and optionally another.

The training loop calls ``add`` once per iteration (the batch's terminal samples, 300 here, in 32 dimensions as on
manywell32) and ``sample`` every other iteration (300 draws for the backward paths), and with a checkpoint it keeps
the state at every step boundary (``boundary``: the buffer's ``boundary()`` where it has one, else a copy of its
``state_dict()``, as ``controlsamp.training.fit_loop`` does). The buffer is first filled to its capacity and
wrapped; each figure is the median over ``--repeats`` calls, one intra-op thread, one process per tree.

    git -C /work/main worktree add /tmp/buffer_old 3c753e6     # the tree before the ring buffer
    python benchmarks/replay_buffer.py --old /tmp/buffer_old
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "BUFFER-RESULT "


def measure(capacities, batch: int, dim: int, repeats: int) -> dict:
    import torch
    from controlsamp.samplers.offpolicy import ReplayBuffer
    from controlsamp.training import _clone
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    out = {}
    for cap in capacities:
        buf = ReplayBuffer(cap, dim)
        for _ in range(cap // batch + 2):
            buf.add(torch.randn(batch, dim, generator=g), torch.randn(batch, generator=g))
        xs = [(torch.randn(batch, dim, generator=g), torch.randn(batch, generator=g)) for _ in range(repeats)]
        add, draw, mark = [], [], []
        for x, r in xs:
            t = time.perf_counter()
            _ = buf.boundary() if hasattr(buf, "boundary") else _clone(buf.state_dict())
            mark.append(time.perf_counter() - t)
            t = time.perf_counter()
            buf.add(x, r)
            add.append(time.perf_counter() - t)
            t = time.perf_counter()
            buf.sample(batch, generator=g)
            draw.append(time.perf_counter() - t)
        out[cap] = (1e3 * statistics.median(add), 1e3 * statistics.median(draw), 1e3 * statistics.median(mark))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", help="another tree (a path) to measure side by side")
    p.add_argument("--capacities", type=int, nargs="+", default=[20_000, 100_000, 600_000])
    p.add_argument("--batch", type=int, default=300)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(TAG + json.dumps(measure(a.capacities, a.batch, a.dim, a.repeats)))
        return
    trees = [("this tree", ROOT)] + ([("old", a.old)] if a.old else [])
    results = {}
    for name, tree in trees:
        env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--batch", str(a.batch), "--dim", str(a.dim),
               "--repeats", str(a.repeats), "--capacities", *map(str, a.capacities)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tree).stdout
        results[name] = json.loads(next(line for line in out.splitlines() if line.startswith(TAG))[len(TAG):])
    print(f"batch {a.batch}, dim {a.dim}, median of {a.repeats} calls, one thread")
    print("| tree | capacity | add ms | sample ms | boundary ms |")
    print("|---|---|---|---|---|")
    for name, res in results.items():
        for cap, (add, draw, mark) in res.items():
            print(f"| {name} | {int(cap):,} | {add:.2f} | {draw:.2f} | {mark:.2f} |")


if __name__ == "__main__":
    main()
