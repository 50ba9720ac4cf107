r"""Heat kernels of the sphere and the torus, and the heat-noised von Mises–Fisher law.

Setting: Brownian motion on a manifold with generator :math:`\tfrac12\Delta` (``controlsamp.manifolds``). A zonal
function on :math:`S^d`, :math:`f(\cos\theta)`, has the Laplacian

.. math:: \Delta f = \frac{1}{\sin^{d-1}\theta}\partial_\theta\big(\sin^{d-1}\theta\,\partial_\theta f\big)
          = (1 - u^2) f''(u) - d\,u\,f'(u), \qquad u = \cos\theta.

Results (``controlsamp.manifolds.heat`` and ``.mixtures`` implement them):

- the zonal harmonics :math:`Z_l = N(d,l)\,\bar P_l(u) / |S^d|` (:math:`\bar P_l` the Gegenbauer polynomial of index
  :math:`(d-1)/2` normalised to 1 at u = 1, Legendre on :math:`S^2`) are eigenfunctions,
  :math:`\Delta Z_l = -l(l+d-1) Z_l`, so each term :math:`e^{-l(l+d-1)t/2} Z_l` of the heat kernel's series solves
  :math:`\partial_t p = \tfrac12\Delta p`; and :math:`\int_{S^d} Z_l(x\cdot\mu)\bar P_m(x\cdot\mu)\,dx = \delta_{lm}`
  (Funk–Hecke: the coefficients of a zonal f are :math:`c_l = \int f \bar P_l`);
- on :math:`T^1` each image :math:`\mathcal N(x + 2\pi k; 0, t)` solves :math:`\partial_t p = \tfrac12 p''`, its Fourier
  coefficients are :math:`e^{-n^2 t/2}/2\pi`, and the image bound :math:`\pi^2(2k-1)^2 - \pi^2 = 4\pi^2 k(k-1)`;
- on :math:`S^3` each image :math:`\frac{e^{t/2}}{(2\pi t)^{3/2}}\frac{\theta + 2\pi k}{\sin\theta}e^{-(\theta+2\pi k)^2/2t}`
  solves the heat equation exactly;
- the Varadhan amplitude :math:`u_0 = (\theta/\sin\theta)^{(d-1)/2}` solves the transport equation
  :math:`2\theta u_0' = (d-1)(1 - \theta\cot\theta) u_0` (so that :math:`(2\pi t)^{-d/2}e^{-\theta^2/2t}u_0` leaves an
  O(1) residual in the heat equation, of relative size O(t)), and :math:`t\log p_t \to -\theta^2/2` as t -> 0;
- the vMF on :math:`S^2`, :math:`\frac{\kappa}{4\pi\sinh\kappa}e^{\kappa u}`, is normalised, its normaliser is
  :math:`C_2 = \kappa^{1/2}/((2\pi)^{3/2} I_{1/2}(\kappa))`, and its Funk–Hecke coefficients are the Bessel ratios
  :math:`\int \mathrm{vMF}\,P_l = I_{l+1/2}(\kappa)/I_{1/2}(\kappa)` (l = 0..3, with :math:`\kappa` a symbol);
- the averages over :math:`S^{d-1}` of :math:`e^{z\cos}` used by the exact convolution integral of the noised vMF:
  :math:`\cosh z` (d = 1), :math:`I_0(z)` (d = 2, Taylor coefficients to order 12), :math:`\sinh z / z` (d = 3).

Sources: De Bortoli et al. (2022), "Riemannian score-based generative modelling" (heat-kernel DSM, Varadhan);
Saloff-Coste (1994) and Stein & Weiss (1971, Ch. IV) for zonal harmonics and Funk–Hecke; Mardia & Jupp (2000),
"Directional statistics", Sec. 9.3 for the vMF; Hsu (2002), "Stochastic analysis on manifolds", Ch. 5 for the
parametrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List

import sympy as sp

from ._check import Check, Identities, all_of, gaussian_integral, truth, zero

TITLE = "Heat kernels of S^d and T^d; the heat-noised von Mises-Fisher law"

t, kappa, z = sp.symbols("t kappa z", positive=True)
theta = sp.symbols("theta", positive=True)
u, x = sp.symbols("u x", real=True)
k = sp.symbols("k", integer=True)
n = sp.symbols("n", integer=True, positive=True)
d_sym = sp.symbols("d", positive=True)

#: the degrees checked per dimension
DEGREES = {2: range(0, 7), 3: range(0, 6), 4: range(0, 5)}


def sphere_volume(d: int) -> sp.Expr:
    """|S^d| = 2 pi^{(d+1)/2} / Gamma((d+1)/2)."""
    return 2 * sp.pi ** sp.Rational(d + 1, 2) / sp.gamma(sp.Rational(d + 1, 2))


def harmonic_dimension(d: int, l: int) -> sp.Expr:
    """N(d, l) = (2l + d - 1) (l + d - 2)! / (l! (d - 1)!)."""
    return sp.Integer(2 * l + d - 1) * sp.factorial(l + d - 2) / (sp.factorial(l) * sp.factorial(d - 1))


def normalised_gegenbauer(d: int, l: int) -> sp.Expr:
    """P-bar_l(u): the Gegenbauer polynomial of index (d-1)/2 over its value at u = 1 (Legendre for d = 2)."""
    nu = sp.Rational(d - 1, 2)
    c = sp.gegenbauer(l, nu, u)
    return sp.expand(c / c.subs(u, 1))


def zonal_term(d: int, l: int) -> sp.Expr:
    r"""The heat kernel's term :math:`e^{-l(l+d-1)t/2} N(d,l) \bar P_l(u)/|S^d|`, an expression in (u, t)."""
    return sp.exp(-sp.Rational(l * (l + d - 1), 2) * t) * harmonic_dimension(d, l) * normalised_gegenbauer(d, l) \
        / sphere_volume(d)


def zonal_laplacian(f: sp.Expr, d: int) -> sp.Expr:
    """(1 - u^2) f'' - d u f' on S^d."""
    return (1 - u ** 2) * sp.diff(f, u, 2) - d * u * sp.diff(f, u)


def wrapped_image() -> sp.Expr:
    """N(x + 2 pi k; 0, t)."""
    return sp.exp(-(x + 2 * sp.pi * k) ** 2 / (2 * t)) / sp.sqrt(2 * sp.pi * t)


def s3_image() -> sp.Expr:
    """One image of the S^3 heat kernel in (theta, t, k)."""
    a = theta + 2 * sp.pi * k
    return sp.exp(t / 2) / (2 * sp.pi * t) ** sp.Rational(3, 2) * a / sp.sin(theta) * sp.exp(-a ** 2 / (2 * t))


def varadhan(d) -> sp.Expr:
    """(2 pi t)^{-d/2} e^{-theta^2/2t} (theta/sin theta)^{(d-1)/2}."""
    return (2 * sp.pi * t) ** (-d / sp.Integer(2)) * sp.exp(-theta ** 2 / (2 * t)) * \
        (theta / sp.sin(theta)) ** ((d - 1) / sp.Integer(2))


def _bessel_half(order: sp.Expr) -> sp.Expr:
    """I_{l+1/2}(kappa) in closed form: sympy's recurrence down to I_{+-1/2}, then
    I_{1/2} = sqrt(2/(pi kappa)) sinh(kappa), I_{-1/2} = sqrt(2/(pi kappa)) cosh(kappa)."""
    e = sp.expand_func(sp.besseli(order, kappa))
    return e.subs({sp.besseli(sp.Rational(1, 2), kappa): sp.sqrt(2 / (sp.pi * kappa)) * sp.sinh(kappa),
                   sp.besseli(-sp.Rational(1, 2), kappa): sp.sqrt(2 / (sp.pi * kappa)) * sp.cosh(kappa)})


def bessel_ratio(l: int) -> sp.Expr:
    """a_l(kappa) = I_{l+1/2}(kappa) / I_{1/2}(kappa) on S^2, in closed form (sinh, cosh, powers of kappa)."""
    return sp.simplify(_bessel_half(sp.Rational(2 * l + 1, 2)) / _bessel_half(sp.Rational(1, 2)))


def vmf_s2() -> sp.Expr:
    """The vMF density on S^2 as a function of u = mu . x: kappa e^{kappa u} / (4 pi sinh kappa)."""
    return kappa * sp.exp(kappa * u) / (4 * sp.pi * sp.sinh(kappa))


@dataclass(frozen=True)
class HeatKernel:
    zonal_terms: Dict[tuple, sp.Expr]  # (d, l) -> e^{-lambda_l t} Z_l(u)
    wrapped_image: sp.Expr
    s3_image: sp.Expr
    varadhan: sp.Expr  # symbolic d
    vmf_s2: sp.Expr
    bessel_ratios: Dict[int, sp.Expr]


@lru_cache(maxsize=None)
def derive() -> HeatKernel:
    terms = {(d, l): zonal_term(d, l) for d, ls in DEGREES.items() for l in ls}
    return HeatKernel(zonal_terms=terms, wrapped_image=wrapped_image(), s3_image=s3_image(),
                      varadhan=varadhan(d_sym), vmf_s2=vmf_s2(), bessel_ratios={l: bessel_ratio(l) for l in range(4)})


identity = Identities()


@identity("zonal Laplacian: (1/sin^{d-1}) d_theta(sin^{d-1} d_theta g(cos)) = (1-u^2) g'' - d u g', d = 2, 3, 4")
def _zonal_laplacian():
    g = sp.Function("g")
    outs = []
    for d in (2, 3, 4):
        f = g(sp.cos(theta))
        lap = sp.diff(sp.sin(theta) ** (d - 1) * sp.diff(f, theta), theta) / sp.sin(theta) ** (d - 1)
        target = ((1 - u ** 2) * sp.Derivative(g(u), (u, 2)) - d * u * sp.Derivative(g(u), u)).subs(u, sp.cos(theta))
        outs.append(zero(sp.simplify(lap.doit() - target.doit())))
    return all_of(*outs)


@identity("each series term e^{-l(l+d-1)t/2} Z_l solves d_t p = Laplace/2: S^2 (l<=6), S^3 (l<=5), S^4 (l<=4)")
def _series_terms_solve():
    outs = []
    for (d, l), term in derive().zonal_terms.items():
        outs.append(zero(sp.expand(sp.diff(term, t) - zonal_laplacian(term, d) / 2)))
    return all_of(*outs)


@identity("S^2 terms are (2l+1) P_l(u) / 4 pi e^{-l(l+1)t/2} (Legendre), S^3 terms (l+1)^2 / (2 pi^2) C_l^1 / (l+1)")
def _series_named():
    outs = []
    for l in DEGREES[2]:
        want = (2 * l + 1) * sp.legendre(l, u) / (4 * sp.pi) * sp.exp(-sp.Rational(l * (l + 1), 2) * t)
        outs.append(zero(sp.expand(derive().zonal_terms[(2, l)] - want)))
    for l in DEGREES[3]:
        want = sp.Integer(l + 1) ** 2 / (2 * sp.pi ** 2) * sp.gegenbauer(l, 1, u) / (l + 1) * \
            sp.exp(-sp.Rational(l * (l + 2), 2) * t)
        outs.append(zero(sp.expand(derive().zonal_terms[(3, l)] - want)))
    return all_of(*outs)


def _weighted_integral(poly: sp.Expr, alpha: sp.Rational) -> sp.Expr:
    r""":math:`\int_{-1}^1 q(u)(1 - u^2)^\alpha du` of a polynomial q by its moments,
    :math:`\int u^{2j}(1-u^2)^\alpha = B(j + \tfrac12, \alpha + 1)` (odd moments vanish)."""
    q = sp.Poly(sp.expand(poly), u)
    total = sp.Integer(0)
    for (power,), coeff in q.terms():
        if power % 2 == 0:
            j = power // 2
            total += coeff * sp.gamma(j + sp.Rational(1, 2)) * sp.gamma(alpha + 1) / sp.gamma(j + alpha + sp.Rational(3, 2))
    return total


@identity("Funk-Hecke normalisation: int_{S^d} Z_l(x.mu) Pbar_m(x.mu) dx = delta_lm (d = 2, 3; l, m <= 4)")
def _funk_hecke():
    outs = []
    for d in (2, 3):
        area = sphere_volume(d - 1)  # the (d-1)-sphere of directions about mu: dx = |S^{d-1}| (1-u^2)^{(d-2)/2} du
        for l in range(5):
            Zl = harmonic_dimension(d, l) * normalised_gegenbauer(d, l) / sphere_volume(d)
            for m in range(5):
                val = area * _weighted_integral(Zl * normalised_gegenbauer(d, m), sp.Rational(d - 2, 2))
                outs.append(zero(sp.simplify(val - (1 if l == m else 0))))
    return all_of(*outs)


@identity("T^1: each image N(x + 2 pi k; 0, t) solves d_t p = p''/2; Fourier coefficient e^{-n^2 t/2}; image bound")
def _wrapped():
    p = derive().wrapped_image
    heat = zero(sp.simplify((sp.diff(p, t) - sp.diff(p, x, 2) / 2) / p))
    # int_R N(y; 0, t) e^{-i n y} dy = e^{-n^2 t / 2}
    y = sp.symbols("y", real=True)
    value, curvature = gaussian_integral(-y ** 2 / (2 * t) - sp.I * n * y, y)
    fourier = zero(sp.simplify(value / sp.sqrt(2 * sp.pi * t) - sp.exp(-n ** 2 * t / 2)))
    bound = zero(sp.expand(sp.pi ** 2 * (2 * k - 1) ** 2 - sp.pi ** 2 - 4 * sp.pi ** 2 * k * (k - 1)))
    return all_of(heat, fourier, bound, truth(curvature == 1 / (2 * t)))


@identity("S^3: each image e^{t/2}(2 pi t)^{-3/2} (theta + 2 pi k)/sin(theta) e^{-(theta+2pi k)^2/2t} solves the heat eq.")
def _s3_images():
    p = derive().s3_image
    lap = sp.diff(sp.sin(theta) ** 2 * sp.diff(p, theta), theta) / sp.sin(theta) ** 2
    return zero(sp.simplify(sp.expand((sp.diff(p, t) - lap / 2) / p)))


@identity("Varadhan: u0 = (theta/sin)^{(d-1)/2} solves 2 theta u0' = (d-1)(1 - theta cot) u0; t log p_t -> -theta^2/2")
def _varadhan():
    d = d_sym
    u0 = (theta / sp.sin(theta)) ** ((d - 1) / 2)
    transport = zero(sp.simplify((2 * theta * sp.diff(u0, theta)
                                  - (d - 1) * (1 - theta * sp.cot(theta)) * u0) / u0))
    # the heat-equation residual of the Varadhan form, relative to it, has no t^{-2} and no t^{-1} part
    p = derive().varadhan
    lap = sp.diff(sp.sin(theta) ** (d - 1) * sp.diff(p, theta), theta) / sp.sin(theta) ** (d - 1)
    rel = sp.expand(sp.simplify((sp.diff(p, t) - lap / 2) / p))
    orders = zero(sp.simplify(sp.limit(t * rel, t, 0)))
    leading = truth(sp.simplify(sp.limit(t * sp.log(p.subs(d, 2)), t, 0) + theta ** 2 / 2) == 0)
    return all_of(transport, orders, leading)


@identity("vMF on S^2: normalised, C_2 = kappa^{1/2} / ((2 pi)^{3/2} I_{1/2}), int vMF P_l = I_{l+1/2}/I_{1/2} (l<=3)")
def _vmf():
    f = derive().vmf_s2
    mass = zero(sp.simplify(2 * sp.pi * sp.integrate(f, (u, -1, 1)) - 1))
    c2 = sp.sqrt(kappa) / ((2 * sp.pi) ** sp.Rational(3, 2) * _bessel_half(sp.Rational(1, 2)))
    norm = zero(sp.simplify(c2 - kappa / (4 * sp.pi * sp.sinh(kappa))))
    outs = [mass, norm]
    for l, ratio in derive().bessel_ratios.items():
        coeff = 2 * sp.pi * sp.integrate(sp.expand(f * sp.legendre(l, u)), (u, -1, 1))
        outs.append(zero(sp.simplify((coeff - ratio).rewrite(sp.exp))))
    # the closed forms of I_{+-1/2} solve the modified Bessel equation kappa^2 y'' + kappa y' - (kappa^2 + nu^2) y = 0
    for nu, y in ((sp.Rational(1, 2), sp.sqrt(2 / (sp.pi * kappa)) * sp.sinh(kappa)),
                  (-sp.Rational(1, 2), sp.sqrt(2 / (sp.pi * kappa)) * sp.cosh(kappa))):
        outs.append(zero(sp.simplify(kappa ** 2 * sp.diff(y, kappa, 2) + kappa * sp.diff(y, kappa)
                                     - (kappa ** 2 + nu ** 2) * y)))
    return all_of(*outs)


@identity("ring averages of e^{z cos}: cosh z on S^0, I_0(z) on S^1 (Taylor to z^12), sinh(z)/z on S^2")
def _ring_averages():
    s0 = zero(sp.simplify((sp.exp(z) + sp.exp(-z)) / 2 - sp.cosh(z)))
    s2 = zero(sp.simplify(sp.integrate(sp.exp(z * u), (u, -1, 1)) / 2 - sp.sinh(z) / z))
    psi = sp.symbols("psi", real=True)
    outs = [s0, s2]
    for j in range(7):  # coefficient of z^{2j}: (1/2pi) int cos^{2j} = (2j)! / (4^j j!^2) = [I_0]_{2j} = 1 / (4^j j!^2)
        avg = sp.integrate(sp.cos(psi) ** (2 * j), (psi, 0, 2 * sp.pi)) / (2 * sp.pi) / sp.factorial(2 * j)
        outs.append(zero(sp.simplify(avg - sp.series(sp.besseli(0, z), z, 0, 14).removeO().coeff(z, 2 * j))))
    return all_of(*outs)


def formulas():
    h = derive()
    return {"S^2 term l=2": h.zonal_terms[(2, 2)], "S^3 term l=2": h.zonal_terms[(3, 2)],
            "wrapped image": h.wrapped_image, "S^3 image": h.s3_image, "Varadhan": h.varadhan,
            "vMF on S^2": h.vmf_s2, "a_1(kappa)": h.bessel_ratios[1], "a_2(kappa)": h.bessel_ratios[2]}


def checks() -> List[Check]:
    return identity.run_all()
