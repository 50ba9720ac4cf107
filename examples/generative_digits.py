r"""A score-based generative model of handwritten digits: scikit-learn's 8x8 images, learned by denoising score matching.

The data are the 1797 8x8 digits shipped with scikit-learn (`cs.generative.data.digits`: 64 pixels of 17 intensity
levels; a fixed 80/20 train / test split), uniformly dequantised into [-1, 1]^64 (y = 2 (x + u) / 17 - 1,
u ~ U[0, 1) drawn afresh each time a training image is used). The forward process is the VP SDE of Song et al.
2021 (linear beta 0.1 .. 20), dX = -beta(t) X / 2 dt + sqrt(beta(t)) dW; an MLP learns the noise
eps(t, x) = -sigma_t grad log p_t(x) by denoising score matching (`cs.generative.DiffusionModel`), and the
reverse-time SDE, dY = [beta Y / 2 + beta grad log p_{T-s}(Y)] ds + sqrt(beta) dW, integrated by Euler–Maruyama
from N(0, I), draws new digits (`cs.generative.sample`).

Printed: the test negative log-likelihood in bits per dimension of the discrete images, from the probability-flow
ODE's density (instantaneous change of variables, Hutchinson's divergence estimate; `log_likelihood`) with the
dequantisation constant (an upper bound on the true bits/dim), next to the uniform distribution over the 17 levels
(log2 17 = 4.09 bits/dim) that a model must beat. The picture: sampled digits, held-out digits and the training
loss.

    python examples/generative_digits.py --out generative_digits.png
"""
import argparse
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402
from controlsamp.generative import likelihood  # noqa: E402
from controlsamp.generative.data import DIGITS_LEVELS, from_model_space, image_grid, load_data  # noqa: E402


def main(out: str = "generative_digits.png", iters: int = 4000, batch: int = 128, hidden: int = 256, depth: int = 3,
         lr: float = 2e-3, steps: int = 500, nll_samples: int = 200, seed: int = 0) -> str:
    torch.set_num_threads(1)
    train, test, info = load_data("digits", seed=seed)  # train: dequantised afresh at each draw
    model = cs.generative.DiffusionModel(cs.processes.VP(64), hidden=hidden, depth=depth, seed=seed)
    model.fit(train, iters=iters, batch=batch, lr=lr, lr_schedule="cosine", seed=seed, progress=False)
    x, s_info = cs.generative.sample(model, 64, sampler="euler", steps=steps,
                                     generator=torch.Generator().manual_seed(seed + 1))
    ll = likelihood.log_likelihood(model, test[:nll_samples], divergence="hutchinson",
                                   generator=torch.Generator().manual_seed(seed + 2))
    bpd = likelihood.bits_per_dim(ll, 64, info["log_scale"])
    uniform = math.log2(DIGITS_LEVELS)
    print(f"VP score model on 8x8 digits, {iters} iterations of {batch} images; {s_info['nfe']} score evaluations "
          "per sample")
    print(f"test NLL: {float(bpd.mean()):.3f} +- {float(bpd.std() / len(bpd) ** 0.5):.3f} bits/dim "
          f"({len(bpd)} held-out images; dequantised: an upper bound); uniform over the {DIGITS_LEVELS} levels: "
          f"{uniform:.3f}")

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), gridspec_kw=dict(width_ratios=[1, 1, 1.2]))
    for a, imgs, title in ((axes[0], from_model_space(x, DIGITS_LEVELS), f"64 sampled digits ({steps} Euler steps)"),
                           (axes[1], from_model_space(test, DIGITS_LEVELS), "64 held-out digits")):
        a.imshow(np.ma.masked_invalid(image_grid(imgs.numpy())), cmap="gray_r", vmin=0, vmax=DIGITS_LEVELS - 1,
                 interpolation="nearest")
        a.set_title(title, fontsize=9)
        a.axis("off")
    a = axes[2]
    loss = np.asarray(model.history["loss"])
    w = max(1, min(50, len(loss) // 5))
    a.plot(np.arange(w - 1, len(loss)), np.convolve(loss, np.ones(w) / w, mode="valid"))
    a.set(xlabel="iteration", ylabel="denoising score-matching loss", yscale="log",
          title=f"training loss (moving average of {w}); test NLL {float(bpd.mean()):.2f} bits/dim "
                f"(uniform {uniform:.2f})")
    a.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="generative_digits.png", help="where to write the picture (PNG)")
    ap.add_argument("--iters", type=int, default=4000, help="training iterations (cosine learning-rate schedule)")
    ap.add_argument("--batch", type=int, default=128, help="images per training iteration")
    ap.add_argument("--hidden", type=int, default=256, help="width of the score network (an MLP)")
    ap.add_argument("--depth", type=int, default=3, help="hidden layers of the score network")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    ap.add_argument("--steps", type=int, default=500, help="Euler-Maruyama steps of the reverse-time SDE")
    ap.add_argument("--nll-samples", dest="nll_samples", type=int, default=200,
                    help="held-out images whose likelihood is measured")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, the network, training and sampling")
    print("wrote", main(**vars(ap.parse_args())))
