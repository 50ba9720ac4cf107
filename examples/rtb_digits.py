r"""Class-conditional digits by relative trajectory balance: a diffusion prior fine-tuned into p(x | c) ∝ p(x) p(c | x).

Venkatraman et al. 2024, "Amortizing intractable inference in diffusion models for vision, language, and control"
(class-conditional posterior). Three models, all on scikit-learn's 8x8 digits (`cs.generative.data.digits`, the
fixed 80/20 split) in model space [-1, 1]^64:

1. the prior: a VP score model (`cs.generative.DiffusionModel`, generative_digits.py's network, 3000 iterations)
   trained by denoising score matching on the uniformly dequantised training images;
2. a classifier p(c | x): an MLP on the 64 pixels, trained by cross-entropy on dequantised training images (its
   test accuracy is printed);
3. the posterior: `cs.samplers.RTB(prior, log_reward)` with log r(x) = log p(c | x) = log_softmax(classifier(x))_c
   for the chosen digit c. The untrained RTB *is* the prior's reverse chain (its control starts at zero); training
   minimises (log Z_theta + log p_theta(path) - log p_prior(path) - log r(x))^2 (loss "tb"), whose optimum samples
   p(x) r(x) / Z with Z = E_prior[r] = p_prior(c), the prior's share of the class (as the classifier sees it).

Printed: for prior samples and posterior samples, the classifier's mean log r and the fraction classified as c,
next to the target's values (prior samples reweighted by r, self-normalised); RTB's importance-sampling estimate
of log Z = log E_prior[r] next to the prior's own Monte-Carlo value and the prior's class frequencies (about 1/10
each, log 0.1 = -2.30, if the prior covers the classes evenly). The picture: prior samples, posterior samples and
RTB's training curves.

    python examples/rtb_digits.py --digit 3 --out rtb_digits.png
"""
import argparse
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import controlsamp as cs  # noqa: E402
from controlsamp.generative import data as gdata  # noqa: E402
from controlsamp.generative.data import DIGITS_LEVELS, DequantisedData, from_model_space, image_grid  # noqa: E402
from controlsamp.generative.likelihood import dequantise  # noqa: E402


def digit_labels(seed: int = 0, test_fraction: float = 0.2):
    """(train images, train labels, test images, test labels): the seeded split of `data.digits` with the classes."""
    x_train, y_train = gdata.digits("train", test_fraction, seed, return_labels=True)
    x_test, y_test = gdata.digits("test", test_fraction, seed, return_labels=True)
    return x_train, y_train, x_test, y_test


def train_classifier(x_int, y, iters: int, hidden: int, lr: float, seed: int) -> nn.Module:
    """An MLP on model-space pixels, cross-entropy on images dequantised afresh at every step."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 10))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(iters):
        rows = torch.randint(len(y), (128,), generator=gen)
        xb = dequantise(x_int[rows], DIGITS_LEVELS, generator=gen).float()
        loss = nn.functional.cross_entropy(net(xb), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def main(out: str = "rtb_digits.png", digit: int = 3, prior_iters: int = 3000, prior_batch: int = 128,
         prior_hidden: int = 256, prior_depth: int = 3, prior_lr: float = 2e-3, clf_iters: int = 500,
         clf_hidden: int = 128, steps: int = 50, iters: int = 300, batch: int = 64, hidden: int = 128, depth: int = 2,
         lr: float = 3e-3, lr_log_Z: float = 1e-1, explore: float = 0.0, langevin: bool = True,
         n_samples: int = 1000, seed: int = 0) -> str:
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be one of 0..9; got {digit}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test = digit_labels(seed)

    # 1. the prior: a VP score model of the dequantised digits
    prior = cs.generative.DiffusionModel(cs.processes.VP(64), hidden=prior_hidden, depth=prior_depth, seed=seed)
    prior.fit(DequantisedData(x_train, DIGITS_LEVELS), iters=prior_iters, batch=prior_batch, lr=prior_lr,
              lr_schedule="cosine", seed=seed, progress=False)
    t_prior = time.perf_counter() - t0

    # 2. the classifier, and 3. the reward log r(x) = log p(c | x)
    clf = train_classifier(x_train, y_train, clf_iters, clf_hidden, 3e-3, seed)
    x_test_model = dequantise(x_test, DIGITS_LEVELS, generator=torch.Generator().manual_seed(seed + 1)).float()
    accuracy = float((clf(x_test_model).argmax(1) == y_test).double().mean())

    def log_reward(x):
        return torch.log_softmax(clf(x.float()), 1)[:, digit].to(x.dtype)

    def judge(x, log_w=None):  # mean log r, fraction classified as the digit, class frequencies (weighted by w)
        with torch.no_grad():
            logp = torch.log_softmax(clf(x.float()), 1).double()
        w = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64) if log_w is None else torch.softmax(log_w, 0)
        freq = torch.zeros(10, dtype=torch.float64).index_add_(0, logp.argmax(1), w)
        return float((w * logp[:, digit]).sum()), float(freq[digit]), freq

    # 4. the posterior by relative trajectory balance; the untrained sampler is the prior's own chain
    rtb = cs.samplers.RTB(prior, log_reward, steps=steps, langevin=langevin, hidden=hidden, depth=depth, seed=seed,
                          dtype=torch.float32)
    t1 = time.perf_counter()
    x_prior, lw_prior = rtb.sample(n_samples, seed=seed + 2)
    log_Z_prior = float(torch.logsumexp(lw_prior, 0) - math.log(n_samples))  # log mean r over prior samples
    rtb.fit(iters=iters, batch=batch, loss="tb", lr=lr, lr_log_Z=lr_log_Z, lr_schedule="cosine", explore=explore,
            seed=seed, progress=False)
    t_rtb = time.perf_counter() - t1
    x_post, lw_post = rtb.sample(n_samples, seed=seed + 3)
    log_Z_rtb = float(torch.logsumexp(lw_post, 0) - math.log(n_samples))
    ess = float(torch.exp(2 * torch.logsumexp(lw_post, 0) - torch.logsumexp(2 * lw_post, 0)))

    # 5. report
    lr_p, frac_p, freq_p = judge(x_prior)
    lr_q, frac_q, _ = judge(x_post)
    lr_t, frac_t, _ = judge(x_prior, lw_prior)  # the exact posterior by self-normalised importance sampling
    ess_t = float(torch.exp(2 * torch.logsumexp(lw_prior, 0) - torch.logsumexp(2 * lw_prior, 0)))
    share = float((y_train == digit).double().mean())
    print(f"prior: VP score model, {prior_iters} iterations of {prior_batch} images ({t_prior:.0f} s); classifier: "
          f"test accuracy {accuracy:.3f} on {len(y_test)} held-out images")
    print(f"posterior p(x | {digit}) by RTB: {iters} iterations of {batch} paths, {steps} steps, "
          f"langevin={langevin}, explore={explore} ({t_rtb:.0f} s)")
    print(f"  prior samples:                   mean log r {lr_p:7.3f}, classified as {digit}: {frac_p:.3f}")
    print(f"  RTB posterior samples:           mean log r {lr_q:7.3f}, classified as {digit}: {frac_q:.3f}  "
          f"(ESS of their importance weights {ess:.0f} of {n_samples})")
    print(f"  target (prior reweighted by r):  mean log r {lr_t:7.3f}, classified as {digit}: {frac_t:.3f}  "
          f"(ESS {ess_t:.0f} of {n_samples})")
    print(f"log Z = log E_prior[r]: RTB {log_Z_rtb:.3f} (importance sampling), TB's learned log Z "
          f"{float(rtb.objective.log_Z.detach()):.3f}; the prior's samples {log_Z_prior:.3f}")
    print(f"  for comparison: log(1/10) = {math.log(0.1):.3f}; log(prior's frequency of {digit}) = "
          f"{math.log(max(float(freq_p[digit]), 1e-12)):.3f}; log(share of {digit}s in the training set) = "
          f"{math.log(share):.3f}")
    print("prior's class frequencies (by the classifier): "
          + " ".join(f"{k}:{float(f):.3f}" for k, f in enumerate(freq_p)))

    # 6. the picture
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), gridspec_kw=dict(width_ratios=[1, 1, 1.2]))
    for a, x, title in ((axes[0], x_prior, f"prior (the untrained RTB): mean log r {lr_p:.2f}, {frac_p:.0%} "
                                           f"classified {digit}"),
                        (axes[1], x_post, f"RTB posterior p(x | {digit}): mean log r {lr_q:.2f}, {frac_q:.0%} "
                                          f"classified {digit} (target {lr_t:.2f}, {frac_t:.0%})")):
        a.imshow(np.ma.masked_invalid(image_grid(from_model_space(x, DIGITS_LEVELS).numpy())), cmap="gray_r", vmin=0,
                 vmax=DIGITS_LEVELS - 1, interpolation="nearest")
        a.set_title(title, fontsize=9)
        a.axis("off")
    a = axes[2]
    w = max(1, min(20, iters // 5))
    for key, label in (("elbo", "mean log w (ELBO)"), ("log_Z_param", "TB's log Z")):
        h = np.asarray(rtb.history[key])
        a.plot(np.arange(w - 1, len(h)), np.convolve(h, np.ones(w) / w, mode="valid"), label=label)
    a.axhline(log_Z_prior, color="k", ls="--", lw=1, label=f"log mean r over prior samples ({log_Z_prior:.2f})")
    a.set(xlabel="iteration", title=f"RTB training (moving average of {w}); IS log Z {log_Z_rtb:.2f}; classifier "
                                    f"accuracy {accuracy:.2f}")
    a.title.set_fontsize(9)
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="rtb_digits.png", help="where to write the picture (PNG)")
    ap.add_argument("--digit", type=int, default=3, help="the class c of the posterior p(x | c)")
    ap.add_argument("--prior-iters", dest="prior_iters", type=int, default=3000,
                    help="training iterations of the prior (cosine learning-rate schedule)")
    ap.add_argument("--prior-batch", dest="prior_batch", type=int, default=128, help="images per prior iteration")
    ap.add_argument("--prior-hidden", dest="prior_hidden", type=int, default=256, help="width of the score network")
    ap.add_argument("--prior-depth", dest="prior_depth", type=int, default=3,
                    help="hidden layers of the score network")
    ap.add_argument("--prior-lr", dest="prior_lr", type=float, default=2e-3, help="Adam learning rate of the prior")
    ap.add_argument("--clf-iters", dest="clf_iters", type=int, default=500,
                    help="training iterations of the classifier (batches of 128)")
    ap.add_argument("--clf-hidden", dest="clf_hidden", type=int, default=128, help="width of the classifier (an MLP)")
    ap.add_argument("--steps", type=int, default=50, help="steps of the prior's reverse chain (exponential scheme)")
    ap.add_argument("--iters", type=int, default=300, help="RTB training iterations (cosine learning-rate schedule)")
    ap.add_argument("--batch", type=int, default=64, help="paths per RTB iteration")
    ap.add_argument("--hidden", type=int, default=128, help="width of RTB's control network")
    ap.add_argument("--depth", type=int, default=2, help="hidden layers of RTB's control network")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the control")
    ap.add_argument("--lr-log-Z", dest="lr_log_Z", type=float, default=1e-1, help="Adam learning rate of TB's log Z")
    ap.add_argument("--explore", type=float, default=0.0,
                    help="exploration noise on the training paths (decayed to zero)")
    ap.add_argument("--langevin", action=argparse.BooleanOptionalAction, default=True,
                    help="add a learned gain times grad log r to the control")
    ap.add_argument("--n-samples", dest="n_samples", type=int, default=1000,
                    help="samples of the prior and of the posterior that are judged")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, the networks, training and sampling")
    print("wrote", main(**vars(ap.parse_args())))
