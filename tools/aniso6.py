#!/usr/bin/env python3
"""The anisotropic 6-mode check of docs/results.md ("2-D fidelity"): data the `toy` preset was
not tuned on, through the public CLI with default settings. Needs numpy (`pip install numpy`);
the tests and the main job do not use this script.

  python3 tools/aniso6.py data aniso6.csv            20 000 training samples (seed 0)
  python3 tools/aniso6.py eval DRAWS RUN_DIR...       one CSV row per run directory

The mixture: 6 components at radius 10 (angles k·60°), each a Gaussian with standard
deviations 2.0 and 0.4 along axes turned by k·30°, weights 0.30, 0.25, 0.15, 0.12, 0.10,
0.08 (σ_data 6.9).

`eval`: for d = 1..DRAWS, 5000 fresh samples of each model (`fdistill sample --seed d`;
teachers at their default Heun 35 NFE) against 5000 fresh exact samples (numpy seed 100 + d),
MMD² and energy distance from `fdistill eval --reference`, averaged over the draws; the mean
log-density under the exact mixture, averaged over the draws; from draw 1, the mode metrics
of `fdistill eval` for a built-in mixture with the Mahalanobis distance in place of the
per-axis one: a sample belongs to the component with the smallest distance if that is ≤ 3,
a mode is covered when it holds at least half its expected share (weight × (1 − e^{−9/2})),
mass error Σ_k |m_k − e_k|, worst mode min_k m_k/e_k, off-mode mass 1 − Σ_k m_k. The row
`exact` evaluates exact samples (numpy seed 1000 + d) the same way: the floor.

Environment: FDISTILL (the binary; default target/release/fdistill).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F = os.environ.get("FDISTILL", os.path.join(REPO, "target/release/fdistill"))
W = np.array([0.3, 0.25, 0.15, 0.12, 0.1, 0.08])


def component(k):
    a, t = np.pi * k / 3, np.pi * k / 6
    u = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return 10 * np.array([np.cos(a), np.sin(a)]), u @ np.diag([4.0, 0.16]) @ u.T


C = [component(k) for k in range(6)]


def exact(n, seed):
    r = np.random.default_rng(seed)
    k = r.choice(6, size=n, p=W)
    return np.stack([r.multivariate_normal(*C[i]) for i in k])


def mahalanobis2(x):
    return np.stack([np.einsum("ni,ij,nj->n", x - m, np.linalg.inv(s), x - m) for m, s in C])


def mean_log_density(x):
    q = mahalanobis2(x)
    logdet = np.array([np.log(np.linalg.det(s)) for _, s in C])
    terms = np.log(W)[:, None] - 0.5 * q - np.log(2 * np.pi) - 0.5 * logdet[:, None]
    return float(np.logaddexp.reduce(terms, axis=0).mean())


def modes(x):
    q = mahalanobis2(x)
    k, inside = q.argmin(0), q.min(0) <= 9
    m = np.array([np.mean(inside & (k == j)) for j in range(6)])
    e = W * (1 - np.exp(-4.5))
    return int((m >= 0.5 * e).sum()), float(np.abs(m - e).sum()), float((m / e).min()), float(1 - m.sum())


def run(*args):
    return subprocess.run([F, *args], check=True, capture_output=True, text=True).stdout


def evaluate(draws, runs):
    tmp = tempfile.mkdtemp()
    refs = []
    for d in range(1, draws + 1):
        refs.append(f"{tmp}/ref{d}.csv")
        np.savetxt(refs[-1], exact(5000, 100 + d), delimiter=",")
    print("run,draws,mmd2_mean,mmd2_std,energy_mean,modes,mass_error,worst_mode,off_mode,mean_log_density")
    for name in runs:
        mmd, energy, logp = [], [], []
        for d in range(1, draws + 1):
            s = f"{tmp}/s.csv"
            if name == "exact":
                np.savetxt(s, exact(5000, 1000 + d), delimiter=",")
            else:
                run("sample", "--checkpoint", name, "--n", "5000", "--seed", str(d), "--out", s, "--threads", "1")
            j = json.loads(run("eval", "--samples", s, "--reference", refs[d - 1], "--json", "--threads", "1"))
            mmd.append(j["mmd2"])
            energy.append(j["energy_distance"])
            x = np.loadtxt(s, delimiter=",")
            logp.append(mean_log_density(x))
            if d == 1:
                mo = modes(x)
        sd = np.std(mmd, ddof=1) if draws > 1 else 0.0
        print(f"{name},{draws},{np.mean(mmd):.4e},{sd:.4e},{np.mean(energy):.4e},{mo[0]},"
              f"{mo[1]:.4f},{mo[2]:.3f},{mo[3]:.4f},{np.mean(logp):.4f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "data":
        r = np.random.default_rng(0)
        k = r.choice(6, size=20000, p=W)
        np.savetxt(sys.argv[2], np.stack([r.multivariate_normal(*C[i]) for i in k]), delimiter=",")
    elif len(sys.argv) >= 4 and sys.argv[1] == "eval":
        if not sys.argv[2].isdigit() or int(sys.argv[2]) < 1:
            sys.exit(f"DRAWS must be a whole number ≥ 1, got {sys.argv[2]!r}\n{__doc__}")
        evaluate(int(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit(__doc__)
