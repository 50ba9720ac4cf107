r"""What a score network predicts, and how each prediction becomes the noise estimate and the score.

With the isotropic perturbation :math:`x_t = \alpha_t x_0 + \sigma_t \epsilon` (:mod:`.kernel`), a network output
``out`` is read as

* ``"eps"``: the noise, :math:`\hat\epsilon = \text{out}` (Ho et al. 2020);
* ``"score"``: the score itself, :math:`\hat s = \text{out}`, :math:`\hat\epsilon = -\sigma_t \hat s`
  (Song & Ermon 2019; Song et al. 2021);
* ``"x0"``: the denoised data, :math:`\hat\epsilon = (x_t - \alpha_t \hat x_0)/\sigma_t`;
* ``"v"``: the velocity of Salimans & Ho 2022, :math:`v = \tilde\alpha_t \epsilon - \tilde\sigma_t x_0` with
  :math:`(\tilde\alpha_t, \tilde\sigma_t) = (\alpha_t, \sigma_t)/r_t`, :math:`r_t = \sqrt{\alpha_t^2 + \sigma_t^2}`
  (for VP, :math:`r_t = 1` and this is their definition; the normalisation extends it to every isotropic
  reference), so :math:`\hat\epsilon = \tilde\sigma_t x_t / r_t + \tilde\alpha_t \hat v`.

In every case the score is :math:`\hat s = -\hat\epsilon/\sigma_t`. For CLD only the velocity score is modelled
(hybrid score matching, Dockhorn et al. 2022): ``"eps"`` reads ``out`` as :math:`\epsilon_v` with
:math:`\hat s_v = -\hat\epsilon_v/\ell_{vv}`, ``"score"`` as :math:`\hat s_v`; ``"x0"`` and ``"v"`` have no CLD
counterpart (the velocity is not a noised copy of the data), so they are refused.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = ["PARAMETRISATIONS", "CLD_PARAMETRISATIONS", "check_parametrisation", "eps_from_output"]

PARAMETRISATIONS = ("eps", "score", "x0", "v")
CLD_PARAMETRISATIONS = ("eps", "score")


def check_parametrisation(parametrisation: str, velocity: bool) -> str:
    """The parametrisation name, or a ValueError that says which ones the reference allows."""
    allowed = CLD_PARAMETRISATIONS if velocity else PARAMETRISATIONS
    if parametrisation not in allowed:
        if velocity and parametrisation in PARAMETRISATIONS:
            raise ValueError(f"parametrisation {parametrisation!r} cannot be used with a CLD reference: hybrid score "
                             f"matching models the velocity score only, so it must be one of {allowed}")
        raise ValueError(f"parametrisation must be one of {allowed}; got {parametrisation!r}")
    return parametrisation


def eps_from_output(parametrisation: str, out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    r"""The noise estimate :math:`\hat\epsilon` from a network output (see the module docstring). ``alpha`` and
    ``sigma`` are (n, 1) columns (for CLD ``sigma`` is :math:`\ell_{vv}` and ``alpha`` is unused)."""
    if parametrisation == "eps":
        return out
    if parametrisation == "score":
        return -sigma * out
    if parametrisation == "x0":
        return (x - alpha * out) / sigma
    r = torch.sqrt(alpha * alpha + sigma * sigma)
    return (sigma / r) * (x / r) + (alpha / r) * out
