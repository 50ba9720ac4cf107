r"""Stochastic samplers of a score source (a trained :class:`~controlsamp.generative.DiffusionModel` or the exact
:class:`~controlsamp.generative.ExactScore`), from the prior at T down to ``t_min``.

* **Reverse-time SDE** (Anderson 1982; Song et al. 2021, eq. 6), in :math:`s = T - t`:

  .. math:: dY_s = \big[-f(t, Y) + G G^\top \nabla\log p_t(Y)\big]\,ds + G\,dW_s, \qquad t = T - s.

  For an isotropic reference this is :class:`~controlsamp.processes.Reversed` (the linear part
  :math:`-k Y`) controlled by :math:`u = g\,\nabla\log p_t`, so it runs on the package's engine: a
  :class:`~controlsamp.sde.DiscretisedReference` under the ``"euler"`` (Euler–Maruyama) or ``"exponential"``
  scheme (the linear part exact; Zhang & Chen 2023) and the one rollout
  (:func:`~controlsamp.sde.controlled_paths`); both are weak order 1 (:mod:`controlsamp.sde.schemes`). For CLD
  the phase-space Euler–Maruyama step of the same SDE (only v is noised and scored).
* **Predictor–corrector** (Song et al. 2021, Alg. 1): before each predictor step, ``corrector_steps`` Langevin
  steps at the current time, :math:`x \leftarrow x + \epsilon\,s + \sqrt{2\epsilon}\,z` with
  :math:`\epsilon = 2(r\,\|z\|/\|s\|)^2` (batch-averaged norms; signal-to-noise ratio r = ``snr``).
* **Annealed Langevin dynamics** (Song & Ermon 2019, Alg. 1): at each of ``steps`` noise levels
  :math:`t_L > \dots > t_1 = t_{\min}`, ``langevin_steps`` steps
  :math:`x \leftarrow x + \tfrac{\alpha_i}{2} s(t_i, x) + \sqrt{\alpha_i}\,z`,
  :math:`\alpha_i = \eta\,\sigma_{t_i}^2` (``step_size`` = :math:`\eta`, their :math:`\epsilon/\sigma_L^2`:
  :math:`\epsilon = 2\cdot 10^{-5}`, :math:`\sigma_L = 0.01` is :math:`\eta = 0.2`), with :math:`\sigma_t` the
  perturbation scale of the reference.
* **SSCS** for CLD (Dockhorn, Vahdat & Kreis 2022, §3.3): Strang splitting of the reverse SDE into the
  linear part with the stationary score, :math:`dx = -\beta M^{-1} v\,ds`,
  :math:`dv = \beta(x - \Gamma M^{-1} v)\,ds + \sqrt{2\Gamma\beta}\,dW` (the forward CLD in (-x, v), solved
  exactly with the CLD kernel), and the score part :math:`dv = 2\Gamma\beta\,(s_v + v/M)\,ds` (an Euler step):
  half a linear step, a score step at the midpoint, half a linear step; one score evaluation per step.

The probability-flow ODE samplers (deterministic) are in :mod:`.ode`; :func:`sample` dispatches to every sampler
by name.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

from .._validate import check_dim, check_generator, check_positive
from ..processes import CLD, Reversed
from ..sde import DiscretisedReference, controlled_paths, rollout
from ..sde.schemes import get_scheme
from .genie import genie_sample
from .ode import pf_ode_sample
from .source import ScoreSource

Tensor = torch.Tensor

__all__ = ["reverse_sde", "predictor_corrector", "annealed_langevin", "sscs", "sample", "SDE_SAMPLERS",
           "ODE_SAMPLERS", "SAMPLERS"]

SDE_SAMPLERS = ("euler", "exponential", "pc", "ald", "sscs")
ODE_SAMPLERS = {"ode": "dopri5", "scipy": "scipy", "ddim": "ddim", "heun": "heun", "ode_euler": "euler"}
SAMPLERS = SDE_SAMPLERS + tuple(ODE_SAMPLERS) + ("genie",)  # every name sample() takes


def _start(source: ScoreSource, n: Optional[int], x_T, generator) -> Tensor:
    check_generator(generator, source.device)
    if x_T is None:
        if n is None:
            raise ValueError("give n (the number of samples) or x_T (the starting states)")
        return source.prior_sample(check_dim(n, "n"), generator=generator).to(source.device, source.dtype)
    x = source.points(x_T, "x_T")
    if n is not None and int(n) != x.shape[0]:
        raise ValueError(f"x_T holds {x.shape[0]} states but n = {n}")
    return x


def _data_part(source: ScoreSource, x: Tensor) -> Tensor:
    return x[:, :source.data_dim] if source.velocity else x


def _reverse_grid(source: ScoreSource, steps: int, scheme) -> DiscretisedReference:
    return DiscretisedReference(Reversed(source.reference, t_min=source.t_min), check_dim(steps, "steps"),
                                scheme=scheme)


def reverse_sde(source: ScoreSource, n: Optional[int] = None, steps: int = 500, scheme: str = "euler",
                x_T=None, generator: Optional[torch.Generator] = None, return_state: bool = False,
                noise: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, object]]:
    r"""Samples of the reverse-time SDE from the prior at T (or from ``x_T``) to ``t_min`` in ``steps`` uniform
    steps (see the module docstring). ``scheme``: ``"euler"`` or ``"exponential"`` (isotropic references);
    ``"euler"`` for CLD. Returns (samples (n, data_dim), or the whole state with ``return_state``; info with
    ``nfe``, the number of score evaluations per sample). ``noise``: the standard normals to use, (n, steps,
    data_dim) (common random numbers; default drawn from ``generator``)."""
    x = _start(source, n, x_T, generator)
    noise = _check_noise(noise, x.shape[0], steps, source.data_dim, x)
    with torch.no_grad():
        if source.velocity:
            if get_scheme(scheme).name != "euler":
                raise ValueError(f"scheme {scheme!r} is not available for CLD: use 'euler' here, or sample(..., "
                                 "sampler='sscs') for the splitting integrator")
            x = _cld_euler(source, x, check_dim(steps, "steps"), generator, noise=noise)
        else:
            ref = _reverse_grid(source, steps, scheme)
            T = source.T
            g = ref.floats("g")

            def control(i: int, y: Tensor) -> Tensor:
                return g[i] * source.score(T - ref.t[i], y)
            x = controlled_paths(ref, control, x, noise=noise, generator=generator, record=False).xs
    info = {"nfe": int(steps), "sampler": f"reverse_sde[{scheme}]"}
    return (x if return_state else _data_part(source, x)), info


def _check_noise(noise, n: int, steps: int, width: int, like: Tensor) -> Optional[Tensor]:
    if noise is None:
        return None
    noise = torch.as_tensor(noise, dtype=like.dtype, device=like.device)
    if tuple(noise.shape) != (n, steps, width):
        raise ValueError(f"noise must have shape ({n}, {steps}, {width}) (samples, steps, noise channels); got "
                         f"{tuple(noise.shape)}")
    return noise


def _cld_euler(source: ScoreSource, x: Tensor, steps: int, generator, t_start: Optional[float] = None,
               t_end: Optional[float] = None, noise: Optional[Tensor] = None) -> Tensor:
    r"""Euler–Maruyama for the CLD reverse SDE :math:`du = [-f(u) + (0, 2\Gamma\beta s_v)]ds + (0, \sqrt{2\Gamma\beta})dW`
    from ``t_start`` (default T) down to ``t_end`` (default t_min) in ``steps`` steps."""
    ref: CLD = source.reference
    t_start = source.T if t_start is None else t_start
    t_end = source.t_min if t_end is None else t_end
    d, h = source.data_dim, (t_start - t_end) / steps
    times = [t_start - i * h for i in range(steps)]
    std = [math.sqrt(2.0 * ref.Gamma * ref.beta_at(t) * h) for t in times]

    def mean(i: int, u: Tensor) -> Tensor:
        t = times[i]
        drift = -ref.drift(t, u)
        drift[:, d:] += 2.0 * ref.Gamma * ref.beta_at(t) * source.score(t, u)
        return u + h * drift

    def noise_map(i: int, z: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(z), std[i] * z], 1)

    return rollout(mean, noise_map, x, steps, noise=noise, generator=generator, noise_dim=d, record=False)[0]


def _langevin(source: ScoreSource, x: Tensor, t: float, snr: float, n_steps: int, generator) -> Tensor:
    """The corrector of Song et al. 2021 (Alg. 4/5, with alpha = 1): Langevin steps at time t whose size keeps the
    ratio of the noise norm to the step's score norm at ``snr``. A score that is zero on every row (an untrained
    network with a zero last layer) defines no step size (the rule gives an infinite one): that step is skipped."""
    d0 = source.data_dim if source.velocity else 0
    for _ in range(n_steps):
        s = source.score(t, x)
        z = torch.randn(s.shape, generator=generator, dtype=x.dtype, device=x.device)
        score_norm = float(s.flatten(1).norm(dim=1).mean())
        if score_norm == 0.0:
            continue
        eps = 2.0 * (snr * float(z.flatten(1).norm(dim=1).mean()) / score_norm) ** 2
        if source.velocity:
            x = x.clone()
            x[:, d0:] = x[:, d0:] + eps * s + math.sqrt(2.0 * eps) * z
        else:
            x = x + eps * s + math.sqrt(2.0 * eps) * z
    return x


def predictor_corrector(source: ScoreSource, n: Optional[int] = None, steps: int = 500, snr: float = 0.16,
                        corrector_steps: int = 1, scheme: str = "euler", x_T=None,
                        generator: Optional[torch.Generator] = None,
                        return_state: bool = False) -> Tuple[Tensor, Dict[str, object]]:
    r"""Predictor–corrector sampling (Song et al. 2021, Alg. 1): the reverse-SDE predictor of :func:`reverse_sde` with
    ``corrector_steps`` Langevin corrector steps of signal-to-noise ratio ``snr`` before each predictor step (for
    CLD the corrector moves the velocity only). ``nfe`` = steps * (1 + corrector_steps)."""
    snr = check_positive(snr, "snr")
    corrector_steps = check_dim(corrector_steps, "corrector_steps")
    steps = check_dim(steps, "steps")
    x = _start(source, n, x_T, generator)
    T = source.T
    with torch.no_grad():
        if source.velocity:
            if get_scheme(scheme).name != "euler":
                raise ValueError(f"scheme {scheme!r} is not available for CLD: use 'euler'")
            h = (T - source.t_min) / steps
            for i in range(steps):  # one predictor step at a time, each after its corrector
                x = _langevin(source, x, T - i * h, snr, corrector_steps, generator)
                x = _cld_euler(source, x, 1, generator, T - i * h, T - (i + 1) * h)
        else:
            ref = _reverse_grid(source, steps, scheme)
            g, a, b, v = (ref.floats(k) for k in ("g", "a", "b", "v"))

            def mean(i: int, y: Tensor) -> Tensor:
                t = T - ref.t[i]
                y = _langevin(source, y, t, snr, corrector_steps, generator)
                return a[i] * y + b[i] * g[i] * source.score(t, y)
            x = rollout(mean, lambda i, z: math.sqrt(v[i]) * z, x, steps, generator=generator, record=False)[0]
    info = {"nfe": steps * (1 + corrector_steps), "sampler": f"pc[{scheme}]"}
    return (x if return_state else _data_part(source, x)), info


def annealed_langevin(source: ScoreSource, n: Optional[int] = None, steps: int = 100, langevin_steps: int = 10,
                      step_size: float = 0.2, x_T=None, generator: Optional[torch.Generator] = None,
                      final_denoise: bool = False) -> Tuple[Tensor, Dict[str, object]]:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1; see the module docstring) over ``steps`` noise
    levels, uniform in t from T to ``t_min``, ``langevin_steps`` steps each, of size :math:`\eta\sigma_i^2` with
    :math:`\eta` = ``step_size`` (Song & Ermon's :math:`\epsilon/\sigma_L^2`). ``final_denoise`` adds Tweedie's denoising step
    :math:`x + \sigma_1^2 s(t_1, x)` at the end (Jolicoeur-Martineau et al. 2021; isotropic VE-type
    references with :math:`\alpha = 1`, divided by :math:`\alpha_{t_1}` otherwise). Isotropic references only."""
    if source.velocity:
        raise ValueError("annealed Langevin dynamics needs an isotropic reference (the score of the whole state); "
                         "for CLD use sampler='sscs', 'euler' or 'pc'")
    steps, langevin_steps = check_dim(steps, "steps"), check_dim(langevin_steps, "langevin_steps")
    step_size = check_positive(step_size, "step_size")
    x = _start(source, n, x_T, generator)
    T, t_min = source.T, source.t_min
    times = [T - (T - t_min) * i / max(steps - 1, 1) for i in range(steps)] if steps > 1 else [t_min]
    alpha, q = source.reference.marginal_coefficients(torch.tensor(times, dtype=torch.float64))
    sig2 = q.tolist()
    if not sig2[-1] > 0:
        raise ValueError("annealed Langevin scales its steps by the noise level, which is 0 at t_min here: give the "
                         "source a positive t_min")
    sizes = [step_size * s2 for s2 in sig2]
    level = [i // langevin_steps for i in range(steps * langevin_steps)]
    with torch.no_grad():
        x = rollout(lambda j, y: y + 0.5 * sizes[level[j]] * source.score(times[level[j]], y),
                    lambda j, z: math.sqrt(sizes[level[j]]) * z, x, steps * langevin_steps, generator=generator,
                    record=False)[0]
        nfe = steps * langevin_steps
        if final_denoise:
            x = (x + sig2[-1] * source.score(times[-1], x)) / float(alpha[-1])
            nfe += 1
    return x, {"nfe": nfe, "sampler": "ald"}


def sscs(source: ScoreSource, n: Optional[int] = None, steps: int = 500, x_T=None,
         generator: Optional[torch.Generator] = None, return_state: bool = False,
         noise: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, object]]:
    r"""The symmetric splitting CLD sampler (Dockhorn et al. 2022, §3.3; see the module docstring), ``steps``
    uniform steps from T to ``t_min``, one score evaluation each. CLD references only. ``noise``: the standard
    normals to use, (n, steps, 4 * data_dim) (two half steps of (x, v) noise per step)."""
    if not source.velocity:
        raise ValueError("sscs is the CLD sampler (symmetric splitting of the phase-space reverse SDE): the source's "
                         f"reference must be CLD, not {type(source.reference).__name__}")
    steps = check_dim(steps, "steps")
    ref: CLD = source.reference
    x = _start(source, n, x_T, generator)
    d, T, h = source.data_dim, source.T, (source.T - source.t_min) / steps
    noise = _check_noise(noise, x.shape[0], steps, 4 * d, x)
    flip = torch.tensor([-1.0, 1.0], dtype=torch.float64)

    def linear_half(s0: float, s1: float):
        """The exact kernel of the linear part over s in [s0, s1] (original times T - s1 .. T - s0): the CLD kernel
        conjugated by the sign flip of x, as 2x2 blocks (Phi, chol(Q))."""
        Phi, _, Q = ref.transition(T - s1, T - s0)
        P2, Q2 = Phi[::d, ::d] * flip[:, None] * flip[None, :], Q[::d, ::d] * flip[:, None] * flip[None, :]
        return P2.tolist(), torch.linalg.cholesky(Q2).tolist()

    halves = [(linear_half(i * h, (i + 0.5) * h), linear_half((i + 0.5) * h, (i + 1) * h)) for i in range(steps)]

    def apply(u: Tensor, P, L, z: Tensor) -> Tensor:
        xx, vv = u[:, :d], u[:, d:]
        zx, zv = z[:, :d], z[:, d:]
        return torch.cat([P[0][0] * xx + P[0][1] * vv + L[0][0] * zx,
                          P[1][0] * xx + P[1][1] * vv + L[1][0] * zx + L[1][1] * zv], 1)

    with torch.no_grad():
        for i in range(steps):
            (P1, L1), (P2, L2) = halves[i]
            z = noise[:, i] if noise is not None else \
                torch.randn(x.shape[0], 4 * d, generator=generator, dtype=x.dtype, device=x.device)
            x = apply(x, P1, L1, z[:, :2 * d])
            t_mid = T - (i + 0.5) * h
            c = 2.0 * ref.Gamma * ref.beta_at(t_mid)
            x = torch.cat([x[:, :d], x[:, d:] + h * c * (source.score(t_mid, x) + x[:, d:] / ref.M)], 1)
            x = apply(x, P2, L2, z[:, 2 * d:])
    info = {"nfe": steps, "sampler": "sscs"}
    return (x if return_state else _data_part(source, x)), info


def sample(source: ScoreSource, n: Optional[int] = None, sampler: str = "euler", steps: int = 500, x_T=None,
           generator: Optional[torch.Generator] = None, **options) -> Tuple[Tensor, Dict[str, object]]:
    """Samples by name: ``"euler"`` / ``"exponential"`` (reverse SDE), ``"pc"`` (predictor–corrector), ``"ald"``
    (annealed Langevin), ``"sscs"`` (CLD), or a probability-flow ODE method of :mod:`.ode` (``"ode"`` = adaptive
    Dormand–Prince, ``"scipy"``, ``"ddim"``, ``"heun"``, ``"ode_euler"``) or ``"genie"`` (:mod:`.genie`: the
    second-order Taylor step, exact JVPs unless ``head=`` is given). ``options`` go to the sampler.
    Returns (samples (n, data_dim), info with ``nfe``)."""
    if sampler in ("euler", "exponential"):
        return reverse_sde(source, n, steps, scheme=sampler, x_T=x_T, generator=generator, **options)
    if sampler == "pc":
        return predictor_corrector(source, n, steps, x_T=x_T, generator=generator, **options)
    if sampler == "ald":
        return annealed_langevin(source, n, steps, x_T=x_T, generator=generator, **options)
    if sampler == "sscs":
        return sscs(source, n, steps, x_T=x_T, generator=generator, **options)
    if sampler == "genie":
        return genie_sample(source, n, x_T=x_T, steps=steps, generator=generator, **options)
    if sampler in ODE_SAMPLERS:
        return pf_ode_sample(source, n, x_T=x_T, method=ODE_SAMPLERS[sampler], steps=steps, generator=generator,
                             **options)
    raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
