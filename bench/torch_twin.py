#!/usr/bin/env python3
"""PyTorch twin of `fdistill-bench` (bench/src/main.rs): the same networks, the same steps.

    python bench/torch_twin.py WORK [--steps N] [--warmup N] [--threads N] [--device cpu|cuda]
                               [--check DIR]

WORK is one of toy, teacher16, teacher32, distill16, distill32, sample16-1, sample16-heun35
(see the table in bench/src/main.rs). Prints one JSON line like the Rust side.

`--check DIR` reads the networks and the probe that `fdistill-bench WORK --export DIR` wrote
(safetensors, fdistill's checkpoint format), checks that every parameter name and shape of
this twin equals the Rust one (both ways), loads the weights, and checks that the forward
pass reproduces the Rust outputs (denoised sample, encoder taps, discriminator logits). It
exits with status 1 on any difference, so the twins cannot drift apart unnoticed.

The UNet is EDM's `EDMPrecond` with a `SongUNet` (DDPM++), built by tools/edm_twin.py (a
PyTorch twin of fdistill's EDM networks with EDM's parameter names); the Rust side exports it
as EDM's state dict (`model.…`, buffers included) with its constructor kwargs
(`WORK.kwargs.json`), and `--check` also compares those kwargs with the twin's. The conv
heads and the toy MLPs follow burn's layouts so that the names and shapes match without a
mapping: `Linear.weight` is `[in, out]` (burn's layout; torch's `nn.Linear` stores
`[out, in]`), GroupNorm's affine parameters are `gamma`/`beta`.

Needs torch and numpy (see docs/performance.md for a CPU install); nothing in fdistill's
tests uses this file.
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import edm_twin  # noqa: E402  (tools/edm_twin.py: EDM's networks with EDM's names)

DOCS = os.path.join(HERE, "..", "docs", "configs")
WORKS = ["toy", "teacher16", "teacher32", "distill16", "distill32", "sample16-1", "sample16-heun35"]
IMAGE_BATCH = 32
CONV_HEAD_WIDTH = 32
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0


# ---------------------------------------------------------------- layers (burn layouts)
class Linear(nn.Module):
    """burn's Linear: y = x W + b with W `[in, out]`, Kaiming-uniform-like init."""

    def __init__(self, d_in, d_out, zero=False):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        w = torch.zeros(d_in, d_out) if zero else torch.empty(d_in, d_out).uniform_(-bound, bound)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(d_out) if zero else torch.empty(d_out).uniform_(-bound, bound))

    def forward(self, x):
        return torch.addmm(self.bias, x, self.weight)


class GroupNorm(nn.Module):
    """GroupNorm with burn's parameter names `gamma` / `beta` (ε = 1e-5)."""

    def __init__(self, groups, channels):
        super().__init__()
        self.groups = groups
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.gamma, self.beta, 1e-5)


def conv(cin, cout, k, stride=1, pad=None, zero=False):
    pad = (k - 1) // 2 if pad is None else pad
    c = nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
    if zero:
        nn.init.zeros_(c.weight)
        nn.init.zeros_(c.bias)
    return c


def group_count(c):
    return min(32, c // 4)


def sinusoidal(c_noise, size, max_period):
    half = size // 2
    freqs = torch.tensor(
        [max_period ** (-i / half) for i in range(half)], dtype=torch.float32, device=c_noise.device
    )
    args = c_noise[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=1)


def edm_scalings(sigma, sigma_data):
    s2 = sigma**2 + sigma_data**2
    root = s2.sqrt()
    return sigma_data**2 / s2, sigma * sigma_data / root, 1.0 / root, sigma.log() / 4.0


# ---------------------------------------------------------------- UNet (crates/fdistill-nets/src/edm_precond.rs)
class UNet(edm_twin.EDMPrecond):
    """fdistill's `UNet` (= `EdmPrecond`): EDM's `EDMPrecond(**kwargs)` on flat images
    `[b, c·R·R]` with integer labels (one-hot inside, as the Rust side), returning the
    denoised images and the encoder taps (end of every level) a discriminator reads."""

    def __init__(self, kwargs):
        super().__init__(**kwargs)
        self.kwargs = kwargs
        self.res, self.ch = kwargs["img_resolution"], kwargs["img_channels"]

    def forward_with_features(self, x, sigma, labels):
        b = x.shape[0]
        y = F.one_hot(labels, self.label_dim).float() if self.label_dim and labels is not None else None
        taps = []
        d = super().forward(x.reshape(b, self.ch, self.res, self.res), sigma, y, None, taps)
        return d.reshape(b, -1), taps

    def forward(self, x, sigma, labels):
        return self.forward_with_features(x, sigma, labels)[0]


# ---------------------------------------------------------------- conv heads (conv_disc.rs)
class ConvNormAct(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.conv = conv(cin, cout, k, stride=stride, pad=1 if stride == 2 else (k - 1) // 2)
        self.norm = GroupNorm(group_count(cout), cout)

    def forward(self, x):
        return F.silu(self.norm(self.conv(x)))


class ConvHead(nn.Module):
    def __init__(self, channels, resolution, width):
        super().__init__()
        n, r = 0, resolution
        while r > 8:
            r //= 2
            n += 1
        self.downs = nn.ModuleList(
            [ConvNormAct(channels if i == 0 else width, width, 4, 2) for i in range(n)]
        )
        self.last = ConvNormAct(channels if n == 0 else width, width, 3, 1)
        self.out = conv(width, 1, resolution >> n, pad=0)

    def forward(self, t):
        h = t
        for d in self.downs:
            h = d(h)
        return self.out(self.last(h)).reshape(-1)


class ConvDiscriminator(nn.Module):
    def __init__(self, taps, width):
        super().__init__()
        self.heads = nn.ModuleList([ConvHead(c, r, width) for c, r in taps])

    def logits(self, feats, sigma):
        return sum(h(f) for h, f in zip(self.heads, feats)) / len(self.heads)


# ---------------------------------------------------------------- toy MLPs (mlp.rs, mlp_disc.rs)
class MlpDenoiser(nn.Module):
    def __init__(self, dim=2, hidden=128, depth=3, emb=32, max_period=100.0, sigma_data=2.5):
        super().__init__()
        self.emb, self.max_period, self.sigma_data = emb, max_period, sigma_data
        self.input = Linear(dim, hidden)
        self.noise = Linear(emb, hidden)
        self.hidden = nn.ModuleList([Linear(hidden, hidden) for _ in range(depth - 1)])
        self.output = Linear(hidden, dim, zero=True)

    def forward_with_features(self, x, sigma, labels=None):
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        e = F.silu(self.noise(sinusoidal(c_noise, self.emb, self.max_period)))
        h = F.silu(self.input(x * c_in[:, None]) + e)
        for layer in self.hidden:
            h = F.silu(layer(h) + e)
        return x * c_skip[:, None] + self.output(h) * c_out[:, None], [h]

    def forward(self, x, sigma, labels=None):
        return self.forward_with_features(x, sigma, labels)[0]


class TapHead(nn.Module):
    def __init__(self, c, hidden, emb):
        super().__init__()
        self.input = Linear(c, hidden)
        self.noise = Linear(emb, hidden)
        self.hidden = Linear(hidden, hidden)
        self.output = Linear(hidden, 1)


class MlpDiscriminator(nn.Module):
    def __init__(self, taps, hidden=128, emb=32):
        super().__init__()
        self.emb = emb
        self.heads = nn.ModuleList([TapHead(c, hidden, emb) for c in taps])

    def logits(self, feats, sigma):
        e0 = sinusoidal(sigma.log() / 4.0, self.emb, 100.0)
        out = 0
        for head, f in zip(self.heads, feats):
            e = F.silu(head.noise(e0))
            h = F.silu(head.input(f) + e)
            h = F.silu(head.hidden(h))
            out = out + head.output(h).reshape(-1)
        return out / len(self.heads)


# ---------------------------------------------------------------- safetensors without the package
def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {meta['dtype']}, expected F32")
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(meta["shape"])
    return out


def check_and_load(module, path):
    """Names and shapes both ways, then load. Returns the list of problems."""
    saved = read_safetensors(path)
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = []
    for k in sorted(set(saved) - set(ours)):
        problems.append(f"{path}: `{k}` {list(saved[k].shape)} is missing from the twin")
    for k in sorted(set(ours) - set(saved)):
        problems.append(f"{path}: the twin has `{k}` {list(ours[k])}, the Rust network does not")
    for k in sorted(set(ours) & set(saved)):
        if tuple(saved[k].shape) != ours[k]:
            problems.append(f"{path}: `{k}` is {list(saved[k].shape)} in Rust, {list(ours[k])} here")
    if not problems:
        module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in saved.items()})
    params = dict(module.named_parameters())
    n_params = sum(int(np.prod(v.shape)) for k, v in saved.items() if k in params)
    return problems, sum(k in params for k in saved), n_params, sum(k not in params for k in saved)


def compare(name, got, want, problems, tol=2e-4):
    got = got.detach().cpu().numpy().reshape(want.shape)
    err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-6))
    if not err < tol:
        problems.append(f"probe `{name}`: max relative difference {err:.2e} (tolerance {tol:.0e})")
    return err


# ---------------------------------------------------------------- configs and builders
def unet_config(work):
    """EDM kwargs of the work's UNet: `UNetConfig::fashion_mnist_small()` at 32×32, the
    `unet` of docs/configs/fashion-mnist-16-cpu.json at 16×16 (SongUNet, DDPM++)."""
    if "32" in work:  # EdmPrecondConfig::fashion_mnist_small()
        arch = dict(model_channels=32, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[], dropout=0.0,
                    embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                    decoder_type="standard", resample_filter=[1, 1])
        u = dict(resolution=32, channels=1, n_classes=10, sigma_data=0.5)
    else:
        with open(os.path.join(DOCS, "fashion-mnist-16-cpu.json")) as f:
            u = json.load(f)["unet"]
        arch = u["arch"]["song_unet"]
    return dict(img_resolution=u["resolution"], img_channels=u["channels"], label_dim=u.get("n_classes") or 0,
                sigma_data=u["sigma_data"], model_type="SongUNet", channel_mult_emb=4, **arch)


def tap_shapes(cfg):
    return [(cfg["model_channels"] * m, cfg["img_resolution"] >> i) for i, m in enumerate(cfg["channel_mult"])]


def distill_config(work):
    """toy preset, or cifar10 preset + docs/configs/fashion-mnist-16-distill-cpu.json."""
    if work == "toy":
        return dict(batch=256, K=2, lambda_gan=0.3, lr_g=1e-3, lr_f=2e-3, lr_d=2e-3, wd=0.01, clip=10.0,
                    ema=0.99, sigma_init=4.0, noise=("lognormal", -0.7, 1.2))
    with open(os.path.join(DOCS, "fashion-mnist-16-distill-cpu.json")) as f:
        o = json.load(f)
    return dict(batch=o["batch_size"], K=o["critic_steps"], lambda_gan=o["lambda_gan"],
                lr_g=o["lr_generator"], lr_f=o["lr_fake_score"], lr_d=o["lr_discriminator"], wd=0.01,
                clip=10.0, ema=o["ema_beta"], sigma_init=80.0, noise=("karras", 1000, 0.002, 0.998))


def karras(n):
    i = np.arange(n)
    s = (SIGMA_MAX ** (1 / RHO) + i / (n - 1) * (SIGMA_MIN ** (1 / RHO) - SIGMA_MAX ** (1 / RHO))) ** RHO
    return np.append(s, 0.0)


def adamw(params, lr, wd):
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)


@torch.no_grad()
def ema_update(ema, model, beta):
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - beta)


# ---------------------------------------------------------------- the timed works
class Clock:
    def __init__(self, device):
        self.device, self.laps, self.last = device, [], time.perf_counter()

    def lap(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.laps.append(1e3 * (now - self.last))
        self.last = now


def teacher_work(work, total, dev, clock):
    cfg = unet_config(work)
    net = UNet(cfg).to(dev)
    ema = UNet(cfg).to(dev)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = adamw(net.parameters(), 2e-3, 0.0)
    rng = np.random.default_rng(0)
    d = cfg["img_channels"] * cfg["img_resolution"] ** 2
    data = torch.from_numpy(rng.uniform(-1, 1, (512, d)).astype(np.float32))
    labels_all = torch.from_numpy(rng.integers(0, 10, 512))
    sd = cfg["sigma_data"]
    clock.last = time.perf_counter()
    for step in range(1, total + 1):
        idx = torch.from_numpy(rng.integers(0, 512, IMAGE_BATCH))
        y, labels = data[idx].to(dev), labels_all[idx].to(dev)
        sigma = torch.from_numpy(np.exp(rng.normal(-1.2, 1.2, IMAGE_BATCH)).astype(np.float32)).to(dev)
        noise = torch.from_numpy(rng.standard_normal((IMAGE_BATCH, d)).astype(np.float32)).to(dev)
        weight = ((sigma**2 + sd**2) / (sigma * sd) ** 2)[:, None]
        loss = (weight * (net(y + noise * sigma[:, None], sigma, labels) - y) ** 2).mean()
        value = loss.item()
        if not math.isfinite(value):
            raise SystemExit(f"non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, net, min(0.995, (1 + step) / (10 + step)))
        clock.lap()


def ring8(rng, n):
    w = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])  # shape only: speed does not depend on it
    k = rng.choice(8, size=n, p=w / w.sum())
    a = 2 * np.pi * k / 8
    return np.stack([4 * np.cos(a), 4 * np.sin(a)], 1) + 0.25 * rng.standard_normal((n, 2))


def distill_work(work, total, dev, clock):
    c = distill_config(work)
    rng = np.random.default_rng(0)
    if work == "toy":
        teacher = MlpDenoiser().to(dev)
        head = MlpDiscriminator([128]).to(dev)
        d, classes = 2, None
        real_data = lambda n: (torch.from_numpy(ring8(rng, n).astype(np.float32)), None)  # noqa: E731
    else:
        cfg = unet_config(work)
        teacher = UNet(cfg).to(dev)
        head = ConvDiscriminator(tap_shapes(cfg), CONV_HEAD_WIDTH).to(dev)
        d, classes = cfg["img_channels"] * cfg["img_resolution"] ** 2, 10
        pix = torch.from_numpy(rng.uniform(-1, 1, (512, d)).astype(np.float32))
        lab = torch.from_numpy(rng.integers(0, 10, 512))

        def real_data(n):
            idx = torch.from_numpy(rng.integers(0, 512, n))
            return pix[idx], lab[idx]

    teacher.requires_grad_(False)
    generator = type(teacher)(*([] if work == "toy" else [unet_config(work)])).to(dev)
    generator.load_state_dict(teacher.state_dict())
    fake = type(teacher)(*([] if work == "toy" else [unet_config(work)])).to(dev)
    fake.load_state_dict(teacher.state_dict())
    ema = type(teacher)(*([] if work == "toy" else [unet_config(work)])).to(dev)
    ema.load_state_dict(teacher.state_dict())
    ema.requires_grad_(False)
    generator.requires_grad_(True)
    fake.requires_grad_(True)
    opt_g = adamw(generator.parameters(), c["lr_g"], c["wd"])
    opt_f = adamw(fake.parameters(), c["lr_f"], c["wd"])
    opt_d = adamw(head.parameters(), c["lr_d"], c["wd"])
    b = c["batch"]
    if c["noise"][0] == "karras":
        grid = karras(c["noise"][1])[: c["noise"][1]]
        lo, hi = int(c["noise"][2] * len(grid)), int(math.ceil(c["noise"][3] * len(grid)))
        draw_sigma = lambda: grid[rng.integers(lo, hi, b)]  # noqa: E731
    else:
        draw_sigma = lambda: np.exp(rng.normal(c["noise"][1], c["noise"][2], b))  # noqa: E731
    tens = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(dev)  # noqa: E731
    labels_of = lambda: (torch.from_numpy(rng.integers(0, classes, b)).to(dev) if classes else None)  # noqa: E731
    gen_steps = 0
    clock.last = time.perf_counter()
    for step in range(1, total + 1):
        z = tens(rng.standard_normal((b, d)))
        eps = tens(rng.standard_normal((b, d)))
        sigma = tens(draw_sigma())
        labels = labels_of()
        si = torch.full((b,), c["sigma_init"], device=dev)
        if step % (c["K"] + 1) == 0:  # generator step
            x0 = generator(z * c["sigma_init"], si, labels)
            x_t = x0 + eps * sigma[:, None]
            d_t, feats = teacher.forward_with_features(x_t, sigma, labels)
            with torch.no_grad():
                d_f = fake(x_t.detach(), sigma, labels)
            logits = head.logits(feats, sigma)
            ell = np.clip(logits.detach().cpu().numpy().astype(np.float64), -10, 10)
            log_r = np.log(np.clip(np.exp(ell), 0.1, 20.0))
            h = 1 / (1 + np.exp(-log_r))  # Jensen–Shannon h = σ(log r), then h / mean h
            h = h / (h.mean() + 1e-6)
            d_t = d_t.detach()
            w = 1.0 / ((x0.detach() - d_t).abs().mean(1) + 1e-6) * tens(h)
            g = ((d_f - d_t) * w[:, None]).detach()
            surrogate = 0.5 * ((x0 - (x0 - g).detach()) ** 2).mean()
            gan = F.softplus(-logits).mean()
            loss = surrogate + c["lambda_gan"] * gan
            if not math.isfinite(loss.item()):
                raise SystemExit(f"non-finite generator loss at step {step}")
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(generator.parameters(), c["clip"])
            opt_g.step()
            gen_steps += 1
            ema_update(ema, generator, min(c["ema"], (1 + gen_steps) / (10 + gen_steps)))
        else:  # critic step: fake-score DSM + discriminator
            x_r, labels_r = real_data(b)
            x_r = x_r.to(dev)
            labels_r = labels_r.to(dev) if labels_r is not None else None
            sigma_r = tens(draw_sigma())
            real_t = x_r + tens(rng.standard_normal((b, d))) * sigma_r[:, None]
            with torch.no_grad():
                x0 = generator(z * c["sigma_init"], si, labels)
            x_t = x0 + eps * sigma[:, None]
            d_f = fake(x_t, sigma, labels)
            dsm = ((d_f - x0) ** 2).mean()
            loss = dsm.clone()
            _ = dsm.item()
            fake_feats = teacher.forward_with_features(x_t, sigma, labels)[1]
            real_feats = teacher.forward_with_features(real_t, sigma_r, labels_r)[1]
            disc = F.softplus(head.logits(fake_feats, sigma)).mean() + F.softplus(
                -head.logits(real_feats, sigma_r)
            ).mean()
            _ = disc.item()
            loss = loss + disc
            if not math.isfinite(loss.item()):
                raise SystemExit(f"non-finite critic loss at step {step}")
            opt_f.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            for p in (fake, head):  # gradient norms, read on the host as the Rust side does
                _ = torch.linalg.vector_norm(
                    torch.stack([q.grad.norm() for q in p.parameters() if q.grad is not None])
                ).item()
            opt_f.step()
            opt_d.step()
        clock.lap()


@torch.no_grad()
def sample_work(work, total, dev, clock):
    cfg = unet_config(work)
    net = UNet(cfg).to(dev).eval()
    d = cfg["img_channels"] * cfg["img_resolution"] ** 2
    labels = (torch.arange(IMAGE_BATCH) % 10).to(dev)
    sig = karras(18)
    clock.last = time.perf_counter()
    for _ in range(total):
        z = torch.randn(IMAGE_BATCH, d, device=dev)
        if work.endswith("heun35"):
            x = z * sig[0]
            for i in range(len(sig) - 1):
                t, tn = float(sig[i]), float(sig[i + 1])
                dc = (x - net(x, torch.full((IMAGE_BATCH,), t, device=dev), labels)) / t
                xn = x + dc * (tn - t)
                if i < len(sig) - 2:
                    dp = (xn - net(xn, torch.full((IMAGE_BATCH,), tn, device=dev), labels)) / tn
                    xn = x + (dc + dp) * (0.5 * (tn - t))
                x = xn
        else:
            x = net(z * SIGMA_MAX, torch.full((IMAGE_BATCH,), SIGMA_MAX, device=dev), labels)
        _ = x.cpu()
        clock.lap()


# ---------------------------------------------------------------- --check
def check(work, directory, tol):
    torch.manual_seed(0)
    problems = []
    if work == "toy":
        net, head = MlpDenoiser(), MlpDiscriminator([128])
    else:
        cfg = unet_config(work)
        net = UNet(cfg)
        head = ConvDiscriminator(tap_shapes(cfg), CONV_HEAD_WIDTH) if work.startswith("distill") else None
    if work != "toy":  # the UNet's constructor kwargs as the Rust side states them
        with open(os.path.join(directory, f"{work}.kwargs.json")) as f:
            rust_kwargs = json.load(f)
        for k, v in sorted(rust_kwargs.items()):
            ours = cfg.get(k, {"augment_dim": 0}.get(k))
            if ours != v:
                problems.append(f"{work}.kwargs.json: `{k}` is {v!r} in Rust, {ours!r} here")
    p, n_tensors, n_params, n_buffers = check_and_load(net, os.path.join(directory, f"{work}.net.safetensors"))
    problems += p
    if head is not None:
        problems += check_and_load(head, os.path.join(directory, f"{work}.head.safetensors"))[0]
    report = {"work": work, "tensors": n_tensors, "parameters": n_params, "buffers": n_buffers}
    if not problems:
        probe = read_safetensors(os.path.join(directory, f"{work}.probe.safetensors"))
        x, sigma = torch.from_numpy(probe["x"].copy()), torch.from_numpy(probe["sigma"].copy())
        labels = torch.from_numpy(probe["labels"].astype(np.int64)) if "labels" in probe else None
        with torch.no_grad():
            d, taps = net.forward_with_features(x, sigma, labels)
            report["denoised_rel_err"] = compare("denoised", d, probe["denoised"], problems, tol)
            for i, t in enumerate(taps):
                if f"tap{i}" in probe:
                    compare(f"tap{i}", t, probe[f"tap{i}"], problems, tol)
            if head is not None:
                report["logits_rel_err"] = compare(
                    "logits", head.logits(taps, sigma), probe["logits"], problems, tol
                )
    for p in problems:
        print("twin check:", p, file=sys.stderr)
    report["ok"] = not problems
    print(json.dumps(report))
    return 0 if not problems else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", choices=WORKS)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--check", metavar="DIR")
    ap.add_argument(
        "--tol", type=float, default=2e-4,
        help="--check: largest max-relative difference accepted (2e-3 for probes the Rust side "
        "computed on cuda, whose f32 matmuls and convolutions run in TF32)",
    )
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(a.threads)
    if a.check:
        return check(a.work, a.check, a.tol)
    cyc = 3 if (a.work == "toy" or a.work.startswith("distill")) else 1
    steps = a.steps or (300 if a.work == "toy" else 12 if cyc == 3 else 10)
    warmup = a.warmup if a.warmup is not None else (30 if a.work == "toy" else 3 if cyc == 3 else 2)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        # the same arithmetic as fdistill's cuda backend: cubek-matmul stages f32 operands as
        # TF32 on tensor cores (adjust_dtypes); cuDNN's convolutions already default to TF32
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    clock = Clock(dev)
    total = steps + warmup
    if a.work.startswith("teacher"):
        teacher_work(a.work, total, dev, clock)
    elif a.work.startswith("sample"):
        sample_work(a.work, total, dev, clock)
    else:
        distill_work(a.work, total, dev, clock)
    laps = sorted(clock.laps[warmup:])
    print(json.dumps({
        "impl": "pytorch", "work": a.work, "device": a.device, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "steps": len(laps),
        "ms_per_step": sum(clock.laps[warmup:]) / len(laps),
        "ms_median": laps[len(laps) // 2], "ms_min": laps[0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
