r"""Iterative proportional fitting (IPF) between two Gaussian laws: exact half-bridges, or fitted from samples.

The Schrödinger bridge P* = argmin { KL(P | R) : P_0 = mu_0, P_T = mu_1 } for a linear reference R is the
limit of alternating half-bridges (Fortet 1940; Kullback 1968; Rüschendorf 1995; as diffusion half-bridges
De Bortoli et al. 2021, "Diffusion Schrödinger bridge with applications to score-based generative
modeling"; Vargas et al. 2021, "Solving Schrödinger bridges via maximum likelihood"). Between Gaussian
endpoint laws every iterate is a Gaussian process, so a half-bridge can be solved exactly by moment
equations (``method="moments"``) or learned from simulated paths by least squares, as a user of a learned
method would (``method="regression"``); :class:`controlsamp.exact.GaussianBridge` is the answer both
must reach.
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from tqdm.auto import tqdm

from .._linalg import solve_spd, sym_sqrt, symmetrize
from .._validate import DTYPE, check_device, check_dim, check_seed
from ..exact import GaussianBridge, bures_wasserstein, gaussian_kl

Tensor = torch.Tensor

METHODS = ("moments", "regression")
NOISES = ("fitted", "reference")


class _Coupling(NamedTuple):
    """Gaussian law of (X_0, X_T): means, covariances and C = Cov(X_0, X_T)."""
    m0: Tensor
    S0: Tensor
    mT: Tensor
    ST: Tensor
    C: Tensor


def _replace_end(m_keep: Tensor, S_keep: Tensor, m_old: Tensor, S_old: Tensor, C: Tensor,
                 m_new: Tensor, S_new: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Keep the kernel X_keep | X_old of a Gaussian pair and give X_old the law N(m_new, S_new).

    With C = Cov(X_keep, X_old) and K = C S_old^{-1}: X_keep | X_old = y ~ N(m_keep + K(y - m_old),
    S_keep - K C^T), so the new pair has mean m_keep + K(m_new - m_old), covariance
    S_keep - K C^T + K S_new K^T at the kept end, and Cov(X_keep, X_old) = K S_new.
    """
    K = solve_spd(S_old, C.T).T
    mean = m_keep + K @ (m_new - m_old)
    cov = symmetrize(S_keep - K @ C.T + K @ S_new @ K.T)
    return mean, cov, K @ S_new


class _AffineChain:
    """A Gaussian Markov chain on the grid t_0 < ... < t_K: a start law at one end (``direction`` forward:
    X_0, backward: X_K) and per-step kernels ``kernels[k] = (M, a, V)`` between t_k and t_{k+1}, i.e.
    X_{k+1} | X_k = x ~ N(M x + a, V) (forward) or X_k | X_{k+1} = y ~ N(M y + a, V) (backward)."""

    def __init__(self, direction: str, mean: Tensor, cov: Tensor, kernels: List[Tuple[Tensor, Tensor, Tensor]]):
        self.direction, self.mean, self.cov, self.kernels = direction, mean, cov, kernels

    def _order(self):
        K = len(self.kernels)
        return range(K) if self.direction == "forward" else range(K - 1, -1, -1)

    def coupling(self) -> _Coupling:
        """Exact moments of (X_0, X_K), propagated step by step (no sampling)."""
        m, S = self.mean, self.cov
        cross = S  # Cov(start, current)
        for k in self._order():
            M, a, V = self.kernels[k]
            m, cross, S = M @ m + a, cross @ M.T, symmetrize(M @ S @ M.T + V)
        if self.direction == "forward":
            return _Coupling(self.mean, self.cov, m, S, cross)
        return _Coupling(m, S, self.mean, self.cov, cross.T)

    def fit_reversal(self, n: int, generator: torch.Generator, ref_noise: Optional[List[Tensor]]) -> list:
        """Simulate n paths from the start law and regress each step's source on its destination by least
        squares: the reversed chain's kernels, in grid order (``ref_noise``: use these step covariances
        instead of the fitted residual covariances)."""
        d = self.mean.shape[0]
        x = self.mean + torch.randn(n, d, dtype=DTYPE, generator=generator) @ sym_sqrt(self.cov).T
        out = [None] * len(self.kernels)
        for k in self._order():
            M, a, V = self.kernels[k]
            y = x @ M.T + a + torch.randn(n, d, dtype=DTYPE, generator=generator) @ sym_sqrt(V).T
            Mr, ar, Vr = _affine_least_squares(y, x)
            out[k] = (Mr, ar, Vr if ref_noise is None else ref_noise[k])
            x = y
        return out


def _affine_least_squares(x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """y ~ M x + a by least squares over the rows, and the residuals' covariance (n - d - 1 degrees of freedom)."""
    n, d = x.shape
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    M = solve_spd(xc.T @ xc, xc.T @ yc).T
    resid = yc - xc @ M.T
    return M, ym - M @ xm, symmetrize(resid.T @ resid / (n - d - 1))


class GaussianIPF:
    r"""IPF for the Schrödinger bridge from N(m_0, S_0) at t = 0 to N(m_1, S_1) at t = T.

    The reference R is Brownian motion dX = sigma dW on [0, T] by default, or any linear SDE of
    :mod:`controlsamp.processes` (``reference=``), with kernel X_T | X_0 = x ~ N(Phi x + c, Q). IPF
    (Fortet 1940; Kullback 1968; Rüschendorf 1995; De Bortoli et al. 2021; Vargas et al. 2021) alternates
    two half-bridges, each the KL projection onto path measures with one prescribed end:

    .. math::
        P^0 = R_{\mu_0},\qquad
        P^{2n+1} = \operatorname*{argmin}_{P_T = \mu_1} \mathrm{KL}(P \,|\, P^{2n})
                 = \overleftarrow{P^{2n}} \text{ started from } \mu_1 \text{ at } T,\qquad
        P^{2n+2} = \operatorname*{argmin}_{P_0 = \mu_0} \mathrm{KL}(P \,|\, P^{2n+1})
                 = \overleftarrow{P^{2n+1}} \text{ started from } \mu_0 \text{ at } 0,

    i.e. P^{2n+1}(d\omega) = P^{2n}(d\omega | X_T) \mu_1(dX_T), P^{2n+2}(d\omega) = P^{2n+1}(d\omega | X_0)
    \mu_0(dX_0). Each iterate is a mixture of R's bridges over its static coupling pi^n = Law(X_0, X_T),
    and pi^n(dx, dy) = f_n(x) g_n(y) p_R(y | x) dx dy: it is Markov, in R's reciprocal class, hence the
    Schrödinger bridge between its own two marginals (:meth:`bridge`). With Gaussian ends pi^n is Gaussian;
    write its means m_0, m_T, covariances S_0, S_T and C = Cov(X_0, X_T). P^0 has
    m_T = Phi m_0 + c, S_T = Phi S_0 Phi^T + Q, C = S_0 Phi^T.

    ``method="moments"``: each half-bridge exactly. Backward (X_0 | X_T kept, X_T ~ N(m_1, S_1)):

    .. math::
        C' = C S_T^{-1} S_1,\quad m_0' = m_0 + C S_T^{-1}(m_1 - m_T),\quad
        S_0' = S_0 - C S_T^{-1} C^\top + C S_T^{-1} S_1 S_T^{-1} C^\top,\quad (m_T', S_T') = (m_1, S_1);

    forward (X_T | X_0 kept, X_0 ~ N(m_0^*, S_0^*), the prescribed start):

    .. math::
        C' = S_0^* S_0^{-1} C,\quad m_T' = m_T + C^\top S_0^{-1}(m_0^* - m_0),\quad
        S_T' = S_T - C^\top S_0^{-1} C + C^\top S_0^{-1} S_0^* S_0^{-1} C,\quad (m_0', S_0') = (m_0^*, S_0^*).

    Both keep the cross block of the joint precision at -Phi^T Q^{-1} (that of p_R(y | x)), which is the
    reciprocal-class property in Gaussian form. The covariance recursion does not involve the means;
    near the fixed point the coupling error contracts per forward+backward pair by rho_max^4, rho_max the
    largest canonical correlation of the bridge's coupling (the linearised Sinkhorn operator
    E[E[. | X_T] | X_0] acts on the quadratic potentials with eigenvalues (rho_i rho_j)^2; the means,
    linear potentials, contract by rho_max^2).

    ``method="regression"``: each half-bridge learned from ``n_samples`` simulated paths on the uniform
    grid t_k = k T / ``steps``, as a learned solver does (mean matching, De Bortoli et al. 2021 Prop. 3).
    An iterate is an affine Gaussian chain; for the backward half-bridge, paths of P^{2n} are simulated
    and, at each step, E[X_{t_k} | X_{t_{k+1}} = y] is fitted as M_k y + a_k by least squares, which is
    the reversal's affine drift b_k(y) = (M_k y + a_k - y) / h in reversed time; the reversed chain
    X_{t_k} = M_k X_{t_{k+1}} + a_k + N(0, V_k) is started from N(m_1, S_1) at T. Symmetrically for the
    forward half-bridge. The step noise V_k is the regression's residual covariance (``noise="fitted"``,
    default), which makes the half-bridge exact on the grid in the infinite-sample limit, so the error
    floors at the Monte Carlo level, O(n_samples^{-1/2}); or the reference's kernel covariance over the
    step, sigma^2 h I for Brownian motion (``noise="reference"``, DSB's choice), which adds an O(h)
    discretisation bias. P^0 uses the reference's exact kernels on the grid. The iterate's coupling is
    computed from the fitted chain by exact moment propagation, not by a second Monte Carlo. IPF contracts
    errors in the marginals but never corrects the cross block of the joint precision (its invariant), so
    the Monte Carlo errors of successive half-bridges in that block add up like a random walk: after the
    floor is reached the error grows slowly, like sqrt(iterations / n_samples) (the error accumulation of
    DSB that bridge matching avoids, Shi et al. 2023).

    Args:
        mean0, cov0, mean1, cov1: the endpoint laws (numpy or torch; float64).
        sigma, T: the Brownian reference's scale and the horizon (``sigma`` is ignored with ``reference``).
        reference: a linear process of :mod:`controlsamp.processes` of matching ``dim`` and ``T``.
        method: ``"moments"`` or ``"regression"``.
        steps: grid steps of the regression method.
        n_samples: paths simulated per half-bridge by the regression method.
        noise: ``"fitted"`` or ``"reference"``, the regression method's step noise (see above).
        seed: seed of the regression method's generator.
        device: ``"cpu"`` only: the iteration is d x d float64 algebra (and, for the regression, least squares on
            the CPU), which a GPU would not speed up; another device is a ValueError. :meth:`drift` takes points on
            any device and returns on theirs.

    Attributes:
        target: the exact :class:`~controlsamp.exact.GaussianBridge` (the fixed point).
        iterations: IPF iterations done so far.
        history: one dict per iteration (below).

    One :meth:`fit` iteration is a backward+forward pair, P^{2n} -> P^{2n+1} -> P^{2n+2}, so the current
    iterate always has the prescribed law at t = 0 and approaches mu_1 at t = T. ``history[n]`` describes
    P^{2n} (``history[0]`` is P^0): ``kl0``, ``klT`` (KL(P_0 | mu_0), KL(P_T | mu_1)), ``w2_0``, ``w2_T``
    (Bures–Wasserstein distances to the prescribed ends), ``coupling_error`` |C_n - C*|_F against
    :meth:`controlsamp.exact.GaussianBridge.coupling`, ``relative_coupling_error`` (divided by |C*|_F), and
    the same for the intermediate P^{2n-1} under ``half_`` (NaN for n = 0). ``klT`` is non-increasing in n,
    and so is ``half_kl0`` (IPF is mirror descent on the free end's KL; Léger 2021, "A gradient descent
    perspective on Sinkhorn").
    """

    def __init__(self, mean0, cov0, mean1, cov1, sigma: float = 1.0, T: float = 1.0, reference=None,
                 method: str = "moments", steps: int = 50, n_samples: int = 10_000, noise: str = "fitted",
                 seed: int = 0, device="cpu"):
        if check_device(device).type != "cpu":
            raise ValueError(f"device must be 'cpu' for GaussianIPF (float64 moment algebra on the CPU; its drift "
                             f"accepts points on any device); got {device!r}")
        # the exact bridge validates the ends, sigma, T and the reference, and is the fixed point
        self.target = GaussianBridge(mean0, cov0, mean1, cov1, sigma=sigma, T=T, reference=reference)
        tgt = self.target
        self.dim, self.T, self.reference = tgt.dim, tgt.T, tgt.reference
        self._sigma, self._user_reference = tgt.sigma, reference
        self.mean0, self.cov0, self.mean1, self.cov1 = tgt.mean0, tgt.cov0, tgt.mean1, tgt.cov1
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")
        self.method, self.noise = method, noise
        self.steps = check_dim(steps, "steps")
        self.n_samples = check_dim(n_samples, "n_samples")
        if method == "regression" and self.n_samples < self.dim + 2:
            raise ValueError(f"n_samples must be at least dim + 2 = {self.dim + 2} for the regression; got {self.n_samples}")
        self.seed = check_seed(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._C_star = tgt.coupling()[1][: self.dim, self.dim:]
        self.iterations = 0
        self.history: List[Dict[str, float]] = []
        self._bridge: Optional[GaussianBridge] = None
        self._chain: Optional[_AffineChain] = None
        self._ref_noise: Optional[List[Tensor]] = None
        if method == "regression":
            grid = [k * self.T / self.steps for k in range(self.steps)] + [self.T]
            kernels = [self.reference.transition(s, t) for s, t in zip(grid[:-1], grid[1:])]
            self._ref_noise = [Q for _, _, Q in kernels]
            self._chain = _AffineChain("forward", self.mean0, self.cov0, kernels)
            self._state = self._chain.coupling()
        else:
            Phi, c, Q = self.reference.transition(0.0, self.T)
            self._state = _Coupling(self.mean0, self.cov0, Phi @ self.mean0 + c,
                                    symmetrize(Phi @ self.cov0 @ Phi.T + Q), self.cov0 @ Phi.T)
        self.history.append(self._record(self._state, None))

    # half-bridges ----------------------------------------------------------------------------
    def _backward(self, s: _Coupling) -> _Coupling:
        if self.method == "moments":
            m0, S0, C = _replace_end(s.m0, s.S0, s.mT, s.ST, s.C, self.mean1, self.cov1)
            return _Coupling(m0, S0, self.mean1, self.cov1, C)
        kernels = self._chain.fit_reversal(self.n_samples, self._generator, self._noise_list())
        self._chain = _AffineChain("backward", self.mean1, self.cov1, kernels)
        return self._chain.coupling()

    def _forward(self, s: _Coupling) -> _Coupling:
        if self.method == "moments":
            mT, ST, Ct = _replace_end(s.mT, s.ST, s.m0, s.S0, s.C.T, self.mean0, self.cov0)
            return _Coupling(self.mean0, self.cov0, mT, ST, Ct.T)
        kernels = self._chain.fit_reversal(self.n_samples, self._generator, self._noise_list())
        self._chain = _AffineChain("forward", self.mean0, self.cov0, kernels)
        return self._chain.coupling()

    def _noise_list(self) -> Optional[List[Tensor]]:
        return self._ref_noise if self.noise == "reference" else None

    def _record(self, s: _Coupling, half: Optional[_Coupling]) -> Dict[str, float]:
        c_norm = float(torch.linalg.matrix_norm(self._C_star))

        def errors(st: _Coupling) -> Dict[str, float]:
            err = float(torch.linalg.matrix_norm(st.C - self._C_star))
            return {"kl0": gaussian_kl(st.m0, st.S0, self.mean0, self.cov0),
                    "klT": gaussian_kl(st.mT, st.ST, self.mean1, self.cov1),
                    "w2_0": bures_wasserstein(st.m0, st.S0, self.mean0, self.cov0),
                    "w2_T": bures_wasserstein(st.mT, st.ST, self.mean1, self.cov1),
                    "coupling_error": err, "relative_coupling_error": err / c_norm if c_norm > 0 else err}

        rec = {"iteration": self.iterations, **errors(s)}
        half_rec = errors(half) if half is not None else {k: math.nan for k in rec if k != "iteration"}
        rec.update({f"half_{k}": v for k, v in half_rec.items()})
        return rec

    def fit(self, iters: int, progress: bool = False) -> "GaussianIPF":
        """Run ``iters`` IPF iterations, each a backward then a forward half-bridge; returns self.

        Calling again continues from the current iterate; ``history`` gains one entry per iteration."""
        iters = check_dim(iters, "iters")
        bar = tqdm(range(iters), desc="Gaussian IPF", disable=not progress, leave=False)
        for _ in bar:
            half = self._backward(self._state)
            self._state = self._forward(half)
            self.iterations += 1
            self._bridge = None
            rec = self._record(self._state, half)
            self.history.append(rec)
            bar.set_postfix(coupling_error=f"{rec['coupling_error']:.3g}", klT=f"{rec['klT']:.3g}")
        bar.close()
        return self

    # the current iterate ---------------------------------------------------------------------
    def coupling(self) -> Tuple[Tensor, Tensor]:
        """Joint law of (X_0, X_T) under the current iterate: mean (2d,), covariance (2d, 2d), laid out as
        :meth:`controlsamp.exact.GaussianBridge.coupling`."""
        s = self._state
        cov = torch.cat([torch.cat([s.S0, s.C], 1), torch.cat([s.C.T, s.ST], 1)], 0)
        return torch.cat([s.m0, s.mT]), symmetrize(cov)

    def bridge(self) -> GaussianBridge:
        """The Schrödinger bridge between the current iterate's own marginals (same reference). With
        ``method="moments"`` it is the current iterate (same coupling, to round-off); with
        ``"regression"`` it is the bridge closest to the fitted chain, whose coupling differs from the
        chain's by the Monte Carlo error."""
        if self._bridge is None:
            s = self._state
            self._bridge = GaussianBridge(s.m0, s.S0, s.mT, s.ST, sigma=self._sigma or 1.0, T=self.T,
                                          reference=self._user_reference)
        return self._bridge

    def drift(self, t, x) -> Tensor:
        """Drift of :meth:`bridge` at time t for points x (n, d)."""
        return self.bridge().drift(t, x)

    def marginal(self, t) -> Tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of :meth:`bridge` at time t."""
        return self.bridge().marginal(t)

    def convergence_rate(self, window: int = 5, floor: Optional[float] = None) -> float:
        r"""Linear contraction factor r of the coupling error per iteration, e_n ~ A r^n, by a least-squares
        fit of log e_n on n over the last ``window + 1`` iterations whose error exceeds ``floor`` (default
        1e-11 (1 + |C*|_F), above round-off). Meaningful for ``method="moments"``, or for the regression
        before its error reaches the Monte Carlo floor."""
        window = check_dim(window, "window")
        if floor is None:
            floor = 1e-11 * (1.0 + float(torch.linalg.matrix_norm(self._C_star)))
        errs = [(h["iteration"], h["coupling_error"]) for h in self.history if h["coupling_error"] > floor]
        pts = errs[-(window + 1):]
        if len(pts) < 2:
            raise ValueError(f"convergence_rate needs at least 2 iterations with a coupling error above {floor:.3g}; "
                             f"history has {len(errs)} (run fit with more iterations, or from fewer)")
        n = torch.tensor([p[0] for p in pts], dtype=DTYPE)
        y = torch.log(torch.tensor([p[1] for p in pts], dtype=DTYPE))
        nc = n - n.mean()
        slope = float((nc * (y - y.mean())).sum() / (nc * nc).sum())
        return math.exp(slope)
