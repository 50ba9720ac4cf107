r"""Differentially private diffusion models (DPDM; Dockhorn, Cao, Vahdat & Kreis 2022, "Differentially private
diffusion models", TMLR, arXiv:2210.09929): DP-SGD training of a :class:`~.model.DiffusionModel`'s score network.

**DP-SGD** (Abadi et al. 2016, "Deep learning with differential privacy", CCS) on a data set of N points. Each step

1. draws a Poisson batch :math:`B`: every point enters independently with probability :math:`q` (``sample_rate``);
2. computes each example's gradient of its own loss, :math:`g_i = \nabla_\theta \ell_i`, where with **noise
   multiplicity** K (DPDM §3.2) the example's loss averages the DSM loss over K independent draws of the time and
   the noise, :math:`\ell_i = \frac1K\sum_{k=1}^K \frac{\lambda(t_{ik})}{\sigma_{t_{ik}}^2}
   |\hat\epsilon_\theta(t_{ik}, \alpha x_i + \sigma\epsilon_{ik}) - \epsilon_{ik}|^2` (one example's K draws are one
   unit of privacy, so K costs no privacy and divides the diffusion-noise variance of :math:`g_i` by K);
3. clips each: :math:`\bar g_i = g_i \min(1, C/|g_i|)` (``max_grad_norm`` C);
4. adds Gaussian noise and normalises by the expected batch size:
   :math:`\tilde g = \frac{1}{qN}\big(\sum_{i\in B}\bar g_i + \sigma_{\rm DP} C\,\xi\big)`, :math:`\xi\sim\mathcal N(0, I)`,
   :math:`\sigma_{\rm DP}` the ``noise_multiplier``; then an Adam step on :math:`\tilde g`.

Every step is the subsampled Gaussian mechanism with sensitivity C; the privacy of the whole run, :math:`(\varepsilon,
\delta)`, is computed by opacus's accountants (Rényi DP, ``"rdp"``, Mironov 2017; or the PRV accountant, ``"prv"``,
Gopi et al. 2021) from :math:`(q, \sigma_{\rm DP}, \text{steps})`, with opacus's default Rényi orders (up to 63:
at large :math:`\varepsilon` the best order is the largest, so the RDP bound is looser than it could be; opacus's
warning about it is silenced). Given a ``target_epsilon`` the noise multiplier is
the accountant's smallest that reaches it for the planned steps (opacus ``get_noise_multiplier``), found before
training; an unreachable target is refused there.

Per-example gradients are taken with ``torch.func`` (``vmap`` of ``grad`` over the B x K noised rows, each a single
time, then averaged per example); the EMA copy, checkpoints and resume are the package's training loop's
(:func:`~controlsamp.training.fit_loop`), the privacy spent so far is in the history (``epsilon``).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Tuple

import torch

from .._validate import check_dim, check_positive, check_seed
from ..training import Streams, fit_loop, make_optimizer
from .model import DiffusionModel
from .parametrisation import eps_from_output

Tensor = torch.Tensor

__all__ = ["ACCOUNTANTS", "epsilon_spent", "noise_multiplier_for", "per_example_grads", "clip_per_example",
           "fit_private"]

ACCOUNTANTS = ("rdp", "prv")


def _accountant(name: str):
    if name not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}; got {name!r}")
    from opacus.accountants import PRVAccountant, RDPAccountant
    return RDPAccountant() if name == "rdp" else PRVAccountant()


def check_privacy(sample_rate: float, delta: float) -> Tuple[float, float]:
    q, delta = float(sample_rate), float(delta)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1] (the Poisson sampling probability of each example); got {q}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1) (and well below 1 / N); got {delta}")
    return q, delta


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                  accountant: str = "rdp") -> float:
    r"""The :math:`\varepsilon` of ``steps`` subsampled Gaussian mechanisms (sampling rate ``sample_rate``, noise
    multiplier ``noise_multiplier``) at ``delta``, by opacus's ``accountant``; 0 for no step."""
    q, delta = check_privacy(sample_rate, delta)
    sigma = check_positive(noise_multiplier, "noise_multiplier")
    steps = int(steps)
    if steps <= 0:
        return 0.0
    acc = _accountant(accountant)
    acc.history = [(sigma, q, steps)]  # opacus keeps (noise multiplier, sample rate, steps) runs
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(acc.get_epsilon(delta=delta))


class _EpsilonTrack:
    """epsilon after k steps, cheaply: for the RDP accountant the Rényi divergences of one step, computed once, times k
    (RDP composes additively; opacus's RDPAccountant sums the same per-run terms), converted at delta; for PRV the
    accountant itself, at the last step only (NaN before: it costs seconds per call)."""

    def __init__(self, sigma: float, q: float, delta: float, accountant: str, steps: int):
        self.sigma, self.q, self.delta, self.accountant, self.steps = sigma, q, delta, accountant, steps
        if accountant == "rdp":
            from opacus.accountants import RDPAccountant
            from opacus.accountants.analysis.rdp import compute_rdp
            self.orders = RDPAccountant.DEFAULT_ALPHAS
            self.rdp1 = torch.as_tensor(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=self.orders),
                                        dtype=torch.float64)

    def __call__(self, k: int) -> float:
        if self.accountant == "rdp":
            from opacus.accountants.analysis.rdp import get_privacy_spent
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
                return float(get_privacy_spent(orders=self.orders, rdp=(self.rdp1 * k).tolist(),
                                               delta=self.delta)[0])
        return epsilon_spent(self.sigma, self.q, k, self.delta, "prv") if k >= self.steps else float("nan")


def noise_multiplier_for(target_epsilon: float, sample_rate: float, steps: int, delta: float,
                         accountant: str = "rdp") -> float:
    r"""The smallest noise multiplier (opacus ``get_noise_multiplier``, to 0.01) whose ``steps`` steps at
    ``sample_rate`` spend at most ``target_epsilon`` at ``delta``; a ValueError naming the settings if it cannot
    be reached."""
    q, delta = check_privacy(sample_rate, delta)
    eps = check_positive(target_epsilon, "target_epsilon")
    steps = check_dim(steps, "steps")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}; got {accountant!r}")
    from opacus.accountants.utils import get_noise_multiplier
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return float(get_noise_multiplier(target_epsilon=eps, target_delta=delta, sample_rate=q, steps=steps,
                                              accountant=accountant, epsilon_tolerance=0.01))
    except ValueError as exc:
        raise ValueError(f"the {accountant} accountant cannot reach epsilon = {eps} at delta = {delta} with "
                         f"sample_rate {q} over {steps} steps ({exc}); raise target_epsilon or lower the steps or "
                         f"the sample rate") from None


def per_example_grads(model: DiffusionModel, x0: Tensor, t: Tensor, eps: Tensor) -> Dict[str, Tensor]:
    r"""The gradient of each example's loss :math:`\ell_i = \frac1K\sum_k |\hat\epsilon_\theta(t_{ik}, x_{t,ik}) -
    \epsilon_{ik}|^2` (the "simple" weighting) in the raw network's parameters: ``x0`` (B, d), ``t`` (B, K),
    ``eps`` (B, K, d). Returns ``{name: (B, *shape)}``."""
    net, param, kernel = model.network, model.parametrisation, model.kernel
    B, K = t.shape
    d = x0.shape[1]
    tf = t.reshape(-1)
    a, s = kernel.coefficients(tf.double().cpu(), B * K, x0)  # (BK, 1) columns
    xt = a * x0.repeat_interleave(K, 0) + s * eps.reshape(B * K, d)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def row_loss(p, ti, xi, ai, si, ei):  # one noised row: a single time, so the network sees one time
        out = torch.func.functional_call(net, p, (ti.reshape(1), xi.reshape(1, d)))
        e_hat = eps_from_output(param, out, xi.reshape(1, d), ai.reshape(1, 1), si.reshape(1, 1))
        return ((e_hat - ei.reshape(1, d)) ** 2).sum()

    rows = torch.func.vmap(torch.func.grad(row_loss), in_dims=(None, 0, 0, 0, 0, 0))(
        params, tf.to(x0.dtype), xt, a, s, eps.reshape(B * K, d))
    return {k: v.reshape(B, K, *v.shape[1:]).mean(1) for k, v in rows.items()}


def clip_per_example(grads: Dict[str, Tensor], max_grad_norm: float) -> Tuple[Dict[str, Tensor], Tensor]:
    r""":math:`\bar g_i = g_i\min(1, C/|g_i|)` with :math:`|g_i|` the norm over all parameters; returns (clipped
    grads, the norms before clipping (B,))."""
    C = check_positive(max_grad_norm, "max_grad_norm")
    norms = torch.sqrt(sum((g.reshape(g.shape[0], -1) ** 2).sum(1) for g in grads.values()))
    factor = (C / (norms + 1e-12)).clamp(max=1.0)
    return {k: g * factor.reshape(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}, norms


def fit_private(model: DiffusionModel, data, iters: int = 1000, sample_rate: Optional[float] = None,
                batch: Optional[int] = None, max_grad_norm: float = 1.0, noise_multiplier: Optional[float] = None,
                target_epsilon: Optional[float] = None, delta: float = 1e-5, noise_multiplicity: int = 1,
                accountant: str = "rdp", lr: float = 1e-3, lr_schedule: Optional[str] = None, seed: int = 0,
                checkpoint: Optional[str] = None, checkpoint_every: int = 200, resume: bool = False,
                progress: bool = True) -> DiffusionModel:
    r"""Train ``model`` by DP-SGD on the data set ``data`` (N, d) (see the module docstring).

    Args:
        sample_rate: q, the Poisson probability of each example per step; or ``batch``, the expected batch (q = batch
            / N).
        max_grad_norm: C. noise_multiplier: :math:`\sigma_{\rm DP}`; or ``target_epsilon``, from which it is set
            (before training) so that ``iters`` steps spend at most that at ``delta``. Exactly one of the two.
        noise_multiplicity: K, the DSM draws averaged inside each example's loss.
        accountant: ``"rdp"`` or ``"prv"`` (opacus).

    History (``model.history``): ``loss`` (the batch's mean per-example loss, before clipping), ``clipped`` (the
    fraction of examples whose gradient was clipped), ``batch`` (the Poisson batch size; an empty batch records loss
    0), ``epsilon`` (spent after the step; with the PRV accountant only at the last step, NaN before).
    ``model.privacy``: ``epsilon``, ``delta``, ``noise_multiplier``, ``sample_rate``, ``steps``,
    ``accountant``, ``max_grad_norm``, ``noise_multiplicity``.
    """
    if not isinstance(model, DiffusionModel):
        raise ValueError(f"model must be a DiffusionModel; got {type(model).__name__}")
    if model.kernel.velocity:
        raise ValueError("fit_private supports isotropic references (VP, VE, OU, Brownian); CLD's hybrid score "
                         "matching is not wired to per-example gradients")
    x_all = model._data_batch(data)
    N = x_all.shape[0]
    iters, K = check_dim(iters, "iters"), check_dim(noise_multiplicity, "noise_multiplicity")
    lr, seed = check_positive(lr, "lr"), check_seed(seed)
    if (sample_rate is None) == (batch is None):
        raise ValueError("give exactly one of sample_rate (the Poisson probability) and batch (the expected batch)")
    q = float(sample_rate) if sample_rate is not None else check_dim(batch, "batch") / N
    q, delta = check_privacy(q, delta)
    C = check_positive(max_grad_norm, "max_grad_norm")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("give exactly one of noise_multiplier and target_epsilon")
    if noise_multiplier is None:
        noise_multiplier = noise_multiplier_for(target_epsilon, q, iters, delta, accountant)
    sigma = check_positive(noise_multiplier, "noise_multiplier")
    _accountant(accountant)  # the name, checked before training
    net = model.network
    names = [k for k, _ in net.named_parameters()]
    opt, sched = make_optimizer([{"params": net.parameters(), "lr": lr}], iters, lr_schedule)
    streams = Streams(seed, model.device)
    t_lo, t_hi = float(model.t_min), float(model.T)
    expected = q * N
    track = _EpsilonTrack(sigma, q, delta, accountant, iters)

    def step(it: int) -> Dict[str, float]:
        take = torch.rand(N, generator=streams.cpu, dtype=torch.float64) < q
        idx = take.nonzero().reshape(-1)
        grads = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
        loss = float("nan")
        clipped = 0.0
        if len(idx):
            x0 = x_all[idx.to(x_all.device)]
            t = t_lo + (t_hi - t_lo) * torch.rand(len(idx), K, generator=streams.cpu, dtype=torch.float64)
            eps = torch.randn(len(idx), K, model.data_dim, generator=streams.device, device=model.device,
                              dtype=model.dtype)
            per = per_example_grads(model, x0, t.to(device=model.device), eps)
            clipped_grads, norms = clip_per_example(per, C)
            grads = {k: g.sum(0) for k, g in clipped_grads.items()}
            clipped = float((norms > C).double().mean())
            with torch.no_grad():
                a, s = model.kernel.coefficients(t.reshape(-1), t.numel(), x0)
                xt = a * x0.repeat_interleave(K, 0) + s * eps.reshape(-1, model.data_dim)
                e_hat = model.eps_hat(t.reshape(-1).to(model.dtype).to(model.device), xt, use_ema=False)
                loss = float(((e_hat - eps.reshape(-1, model.data_dim)) ** 2).sum(1).mean())
        for k, p in zip(names, net.parameters()):
            noise = torch.randn(p.shape, generator=streams.device, device=p.device, dtype=p.dtype)
            p.grad = (grads[k] + sigma * C * noise) / expected
        opt.step()
        if sched is not None:
            sched.step()
        model.ema.update_parameters(net)
        return {"loss": loss if math.isfinite(loss) else 0.0, "clipped": clipped, "batch": float(len(idx)),
                "epsilon": track(it + 1)}

    modules = {"network": net, "ema": model.ema, "optimizer": opt}
    if sched is not None:
        modules["schedule"] = sched
    # the mechanism (q, sigma, C, K) and the data size fix the privacy of each step, so a run may be resumed with
    # more steps (its epsilon grows; under target_epsilon sigma would change and the checkpoint is refused); a
    # learning-rate schedule depends on the planned steps, so then they must match
    config = dict(model.config, dp=True, sample_rate=q, max_grad_norm=C, noise_multiplier=sigma, delta=delta,
                  noise_multiplicity=K, accountant=accountant, lr=float(lr), lr_schedule=lr_schedule,
                  fit_seed=int(seed), n_data=N, **({"iters": iters} if lr_schedule is not None else {}))
    model.trained = True
    fit_loop(step, iters, modules, model.history, kind=model.kind + "[DP-SGD]", config=config, streams=streams,
             checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, progress=progress,
             postfix=("loss", "epsilon"))
    model.privacy = dict(epsilon=epsilon_spent(sigma, q, iters, delta, accountant), delta=delta,
                         noise_multiplier=sigma, sample_rate=q, steps=iters, accountant=accountant, max_grad_norm=C,
                         noise_multiplicity=K)
    return model
