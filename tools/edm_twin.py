#!/usr/bin/env python3
"""PyTorch twin of fdistill's EDM networks (SongUNet: DDPM++ / NCSN++, DhariwalUNet: ADM,
EDMPrecond), written from the published architecture (Karras et al. 2022, appendix F; Song et
al. 2021; Dhariwal & Nichol 2021) with the parameter names of EDM's state dicts, so that a
state dict written by fdistill loads with `load_state_dict(strict=True)` here and in EDM.

This is fdistill's own code (MIT OR Apache-2.0); it is not EDM's implementation.

Subcommands (torch, numpy and safetensors needed; importing the module needs only torch and
numpy, e.g. bench/torch_twin.py builds its networks from it):

  count                      names, parameters and buffers of the full-size configurations
  fixtures --out DIR         small seeded networks + inputs + outputs for the Rust tests
  forward --kwargs K --weights W --inputs I --out O
                             run a network given by EDM constructor kwargs (JSON) on inputs
  bench --batch 4 --reps 5   time forward and forward+backward of full DDPM++ CIFAR-10
  bench-distill --batch 4 --reps 1
                             time one critic step and one generator step of DMD2 without
                             GAN (K = 1) on three full DDPM++ CIFAR-10 networks, mirroring
                             fdistill's `edm_distill_speed` example
"""

import argparse
import json
import math
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------
# Layers


def group_count(channels):
    """GroupNorm groups of the EDM family: min(32, C / 4)."""
    return min(32, channels // 4)


def init_tensor(shape, mode, fan_in, fan_out, gain):
    """EDM's initialisers scaled by `gain`: xavier_uniform, kaiming_uniform, kaiming_normal."""
    if gain == 0:
        return torch.zeros(shape)
    u = torch.rand(shape) * 2 - 1
    if mode == "xavier_uniform":
        return gain * math.sqrt(6 / (fan_in + fan_out)) * u
    if mode == "kaiming_uniform":
        return gain * math.sqrt(3 / fan_in) * u
    if mode == "kaiming_normal":
        return gain * math.sqrt(1 / fan_in) * torch.randn(shape)
    raise ValueError(mode)


class Init:
    def __init__(self, mode, weight=1.0, bias=0.0):
        self.mode, self.weight, self.bias = mode, weight, bias


class Linear(torch.nn.Module):
    """y = x Wᵀ + b with W [out, in]."""

    def __init__(self, cin, cout, init, bias=True):
        super().__init__()
        self.in_features = cin
        self.weight = torch.nn.Parameter(init_tensor([cout, cin], init.mode, cin, cout, init.weight))
        self.bias = (
            torch.nn.Parameter(init_tensor([cout], init.mode, cin, cout, init.bias)) if bias else None
        )

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def filter_2d(taps):
    """Separable resampling filter f fᵀ / (Σf)² as a [1, 1, k, k] tensor."""
    f = torch.tensor(taps, dtype=torch.float32)
    return (torch.outer(f, f) / f.sum() ** 2)[None, None]


class Conv2d(torch.nn.Module):
    """A k×k convolution (k = 0: none) after an optional up/down resampling by a separable
    filter; `fused_down` convolves first (padding k/2 + filter padding), then resamples."""

    def __init__(self, cin, cout, kernel, init=None, bias=True, resample=None, taps=(1, 1), fused_down=False):
        super().__init__()
        self.cin, self.cout, self.resample, self.fused_down = cin, cout, resample, fused_down
        fan_in, fan_out = cin * kernel * kernel, cout * kernel * kernel
        self.weight = (
            torch.nn.Parameter(init_tensor([cout, cin, kernel, kernel], init.mode, fan_in, fan_out, init.weight))
            if kernel
            else None
        )
        self.bias = (
            torch.nn.Parameter(init_tensor([cout], init.mode, fan_in, fan_out, init.bias))
            if kernel and bias
            else None
        )
        self.register_buffer("resample_filter", filter_2d(taps) if resample else None)

    def forward(self, x):
        w, f = self.weight, self.resample_filter
        wp = w.shape[-1] // 2 if w is not None else 0
        fp = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.resample == "down" and self.fused_down:
            x = F.conv2d(x, w, padding=wp + fp)
            x = F.conv2d(x, f.repeat(self.cout, 1, 1, 1), groups=self.cout, stride=2)
        else:
            if self.resample == "up":
                x = F.conv_transpose2d(x, (4 * f).repeat(self.cin, 1, 1, 1), groups=self.cin, stride=2, padding=fp)
            elif self.resample == "down":
                x = F.conv2d(x, f.repeat(self.cin, 1, 1, 1), groups=self.cin, stride=2, padding=fp)
            if w is not None:
                x = F.conv2d(x, w, padding=wp)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        return x


class GroupNorm(torch.nn.Module):
    def __init__(self, channels, eps):
        super().__init__()
        self.groups, self.eps = group_count(channels), eps
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


class UNetBlock(torch.nn.Module):
    """Pre-activation residual block with noise-embedding injection (adaptive scale/shift or
    additive), optional resampling and optional multi-head self-attention (qkv channels laid
    out [head][channel][q|k|v])."""

    def __init__(self, cin, cout, emb, *, up=False, down=False, attention=False, heads=None,
                 channels_per_head=64, dropout=0.0, skip_scale=1.0, eps=1e-5, taps=(1, 1),
                 resample_proj=False, adaptive_scale=True, init, init_zero, init_attn=None):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.heads = (heads if heads is not None else cout // channels_per_head) if attention else 0
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
        resample = "up" if up else "down" if down else None
        self.norm0 = GroupNorm(cin, eps)
        self.conv0 = Conv2d(cin, cout, 3, init, resample=resample, taps=taps)
        self.affine = Linear(emb, cout * (2 if adaptive_scale else 1), init)
        self.norm1 = GroupNorm(cout, eps)
        self.conv1 = Conv2d(cout, cout, 3, init_zero)
        self.skip = None
        if cin != cout or resample:
            k = 1 if (resample_proj or cin != cout) else 0
            self.skip = Conv2d(cin, cout, k, init, resample=resample, taps=taps)
        if self.heads:
            self.norm2 = GroupNorm(cout, eps)
            self.qkv = Conv2d(cout, 3 * cout, 1, init_attn or init)
            self.proj = Conv2d(cout, cout, 1, init_zero)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        p = self.affine(emb)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = p.chunk(2, dim=1)
            h = F.silu(shift + self.norm1(h) * (scale + 1))
        else:
            h = F.silu(self.norm1(h + p))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        h = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.heads:
            b, c, hh, ww = h.shape
            qkv = self.qkv(self.norm2(h)).reshape(b * self.heads, c // self.heads, 3, hh * ww)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [b·heads, c/heads, hw]
            logits = torch.einsum("nci,ncj->nij", q, k) / math.sqrt(k.shape[1])
            a = torch.einsum("nij,ncj->nci", logits.softmax(dim=2), v)
            h = (self.proj(a.reshape(b, c, hh, ww)) + h) * self.skip_scale
        return h


def positional(c_noise, channels, max_positions=10000, endpoint=False):
    """[cos(ω_i c), sin(ω_i c)] with ω_i = (1/P)^(i / (channels/2 − endpoint))."""
    half = channels // 2
    freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / (half - (1 if endpoint else 0)))
    arg = c_noise[:, None] * freqs[None]
    return torch.cat([arg.cos(), arg.sin()], dim=1)


class FourierEmbedding(torch.nn.Module):
    def __init__(self, channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * scale)

    def forward(self, c_noise):
        arg = c_noise[:, None] * (2 * math.pi * self.freqs)[None]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


# ---------------------------------------------------------------------------------------
# Networks


class SongUNet(torch.nn.Module):
    """DDPM++ (positional embedding, standard encoder) and NCSN++ (Fourier embedding,
    residual encoder, [1,3,3,1] resampling) of Song et al. 2021 as configured in EDM."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4,
                 attn_resolutions=(16,), dropout=0.10, label_dropout=0.0, embedding_type="positional",
                 channel_mult_noise=1, encoder_type="standard", decoder_type="standard",
                 resample_filter=(1, 1)):
        super().__init__()
        self.label_dropout = label_dropout
        emb = model_channels * channel_mult_emb
        noise = model_channels * channel_mult_noise
        init = Init("xavier_uniform")
        init_zero = Init("xavier_uniform", weight=1e-5)
        init_attn = Init("xavier_uniform", weight=math.sqrt(0.2))
        kw = dict(heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6, taps=resample_filter,
                  resample_proj=True, adaptive_scale=False, init=init, init_zero=init_zero,
                  init_attn=init_attn)
        blk = lambda cin, cout, **extra: UNetBlock(cin, cout, emb, **kw, **extra)  # noqa: E731

        self.map_noise = (
            positional_module(noise, endpoint=True) if embedding_type == "positional" else FourierEmbedding(noise)
        )
        self.map_label = Linear(label_dim, noise, init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise, init, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise, emb, init)
        self.map_layer1 = Linear(emb, emb, init)

        self.enc = torch.nn.ModuleDict()
        c, caux = in_channels, in_channels
        for level, mult in enumerate(channel_mult):
            r = img_resolution >> level
            if level == 0:
                self.enc[f"{r}x{r}_conv"] = Conv2d(c, model_channels, 3, init)
                c = model_channels
            else:
                self.enc[f"{r}x{r}_down"] = blk(c, c, down=True)
                if encoder_type == "skip":
                    self.enc[f"{r}x{r}_aux_down"] = Conv2d(caux, caux, 0, resample="down", taps=resample_filter)
                    self.enc[f"{r}x{r}_aux_skip"] = Conv2d(caux, c, 1, init)
                if encoder_type == "residual":
                    self.enc[f"{r}x{r}_aux_residual"] = Conv2d(
                        caux, c, 3, init, resample="down", taps=resample_filter, fused_down=True)
                    caux = c
            for i in range(num_blocks):
                self.enc[f"{r}x{r}_block{i}"] = blk(c, model_channels * mult, attention=r in attn_resolutions)
                c = model_channels * mult
        skips = [m.out_channels if isinstance(m, UNetBlock) else m.cout for n, m in self.enc.items() if "aux" not in n]

        self.dec = torch.nn.ModuleDict()
        levels = len(channel_mult)
        for level in reversed(range(levels)):
            mult, r = channel_mult[level], img_resolution >> level
            if level == levels - 1:
                self.dec[f"{r}x{r}_in0"] = blk(c, c, attention=True)
                self.dec[f"{r}x{r}_in1"] = blk(c, c)
            else:
                self.dec[f"{r}x{r}_up"] = blk(c, c, up=True)
            for i in range(num_blocks + 1):
                cin = c + skips.pop()
                c = model_channels * mult
                self.dec[f"{r}x{r}_block{i}"] = blk(cin, c, attention=(i == num_blocks and r in attn_resolutions))
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < levels - 1:
                    self.dec[f"{r}x{r}_aux_up"] = Conv2d(out_channels, out_channels, 0, resample="up", taps=resample_filter)
                self.dec[f"{r}x{r}_aux_norm"] = GroupNorm(c, 1e-6)
                self.dec[f"{r}x{r}_aux_conv"] = Conv2d(c, out_channels, 3, init_zero)
        self.levels = [img_resolution >> l for l in range(levels)]
        self.num_blocks = num_blocks

    def forward(self, x, c_noise, class_labels, augment_labels=None, taps=None):
        e = self.map_noise(c_noise)
        half = e.shape[1] // 2
        e = torch.cat([e[:, half:], e[:, :half]], dim=1)  # sines first
        if self.map_label is not None:
            y = class_labels
            if self.training and self.label_dropout:
                y = y * (torch.rand([x.shape[0], 1]) >= self.label_dropout).to(y.dtype)
            e = e + self.map_label(y * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            e = e + self.map_augment(augment_labels)
        e = F.silu(self.map_layer1(F.silu(self.map_layer0(e))))

        skips, aux = [], x
        for name, m in self.enc.items():
            if name.endswith("aux_down"):
                aux = m(aux)
            elif name.endswith("aux_skip"):
                x = skips[-1] = x + m(aux)
            elif name.endswith("aux_residual"):
                x = skips[-1] = aux = (x + m(aux)) / math.sqrt(2)
            else:
                x = m(x, e) if isinstance(m, UNetBlock) else m(x)
                skips.append(x)
            if taps is not None and name.endswith(f"_block{self.num_blocks - 1}"):
                taps.append(x)

        aux = out = None
        for name, m in self.dec.items():
            if name.endswith("aux_up"):
                aux = m(aux)
            elif name.endswith("aux_norm"):
                out = m(x)
            elif name.endswith("aux_conv"):
                out = m(F.silu(out))
                aux = out if aux is None else out + aux
            else:
                if x.shape[1] != m.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = m(x, e)
        return aux


class _Positional(torch.nn.Module):
    def __init__(self, channels, endpoint):
        super().__init__()
        self.channels, self.endpoint = channels, endpoint

    def forward(self, c_noise):
        return positional(c_noise, self.channels, endpoint=self.endpoint)


def positional_module(channels, endpoint):
    return _Positional(channels, endpoint)


class DhariwalUNet(torch.nn.Module):
    """ADM (Dhariwal & Nichol 2021) as configured in EDM. `channels_per_head` (64 in EDM) is
    exposed so that small test networks get multi-head attention."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
                 attn_resolutions=(32, 16, 8), dropout=0.10, label_dropout=0.0, channels_per_head=64):
        super().__init__()
        self.label_dropout = label_dropout
        emb = model_channels * channel_mult_emb
        init = Init("kaiming_uniform", weight=math.sqrt(1 / 3), bias=math.sqrt(1 / 3))
        init_zero = Init("kaiming_uniform", weight=0.0, bias=0.0)
        kw = dict(channels_per_head=channels_per_head, dropout=dropout, init=init, init_zero=init_zero)
        blk = lambda cin, cout, **extra: UNetBlock(cin, cout, emb, **kw, **extra)  # noqa: E731

        self.map_noise = positional_module(model_channels, endpoint=False)
        self.map_augment = Linear(augment_dim, model_channels, init_zero, bias=False) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb, init)
        self.map_layer1 = Linear(emb, emb, init)
        self.map_label = (
            Linear(label_dim, emb, Init("kaiming_normal", weight=math.sqrt(label_dim)), bias=False)
            if label_dim else None
        )

        self.enc = torch.nn.ModuleDict()
        c = in_channels
        for level, mult in enumerate(channel_mult):
            r = img_resolution >> level
            if level == 0:
                self.enc[f"{r}x{r}_conv"] = Conv2d(c, model_channels * mult, 3, init)
                c = model_channels * mult
            else:
                self.enc[f"{r}x{r}_down"] = blk(c, c, down=True)
            for i in range(num_blocks):
                self.enc[f"{r}x{r}_block{i}"] = blk(c, model_channels * mult, attention=r in attn_resolutions)
                c = model_channels * mult
        skips = [m.out_channels if isinstance(m, UNetBlock) else m.cout for m in self.enc.values()]

        self.dec = torch.nn.ModuleDict()
        levels = len(channel_mult)
        for level in reversed(range(levels)):
            mult, r = channel_mult[level], img_resolution >> level
            if level == levels - 1:
                self.dec[f"{r}x{r}_in0"] = blk(c, c, attention=True)
                self.dec[f"{r}x{r}_in1"] = blk(c, c)
            else:
                self.dec[f"{r}x{r}_up"] = blk(c, c, up=True)
            for i in range(num_blocks + 1):
                cin = c + skips.pop()
                c = model_channels * mult
                self.dec[f"{r}x{r}_block{i}"] = blk(cin, c, attention=r in attn_resolutions)
        self.out_norm = GroupNorm(c, 1e-5)
        self.out_conv = Conv2d(c, out_channels, 3, init_zero)
        self.num_blocks = num_blocks

    def forward(self, x, c_noise, class_labels, augment_labels=None, taps=None):
        e = self.map_noise(c_noise)
        if self.map_augment is not None and augment_labels is not None:
            e = e + self.map_augment(augment_labels)
        e = self.map_layer1(F.silu(self.map_layer0(e)))
        if self.map_label is not None:
            y = class_labels
            if self.training and self.label_dropout:
                y = y * (torch.rand([x.shape[0], 1]) >= self.label_dropout).to(y.dtype)
            e = e + self.map_label(y)
        e = F.silu(e)
        skips = []
        for name, m in self.enc.items():
            x = m(x, e) if isinstance(m, UNetBlock) else m(x)
            skips.append(x)
            if taps is not None and name.endswith(f"_block{self.num_blocks - 1}"):
                taps.append(x)
        for m in self.dec.values():
            if x.shape[1] != m.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = m(x, e)
        return self.out_conv(F.silu(self.out_norm(x)))


class EDMPrecond(torch.nn.Module):
    """D(x; σ, y) = c_skip x + c_out F(c_in x; ¼ ln σ, y) (Karras et al. 2022, Table 1)."""

    def __init__(self, img_resolution, img_channels, label_dim=0, sigma_data=0.5, model_type="SongUNet", **kw):
        super().__init__()
        self.label_dim, self.sigma_data = label_dim, sigma_data
        net = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}[model_type]
        self.model = net(img_resolution, img_channels, img_channels, label_dim=label_dim, **kw)

    def forward(self, x, sigma, class_labels=None, augment_labels=None, taps=None):
        sd = self.sigma_data
        s = sigma.reshape(-1, 1, 1, 1)
        if self.label_dim and class_labels is None:
            class_labels = torch.zeros([1, self.label_dim], device=x.device)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        f = self.model(c_in * x, sigma.log().flatten() / 4, class_labels, augment_labels, taps)
        return c_skip * x + c_out * f


# ---------------------------------------------------------------------------------------
# Configurations

FULL = {
    # EDM's `--arch=ddpmpp --cond=1` on CIFAR-10 (augment_dim 9 as in its released checkpoints).
    "edm-ddpmpp-cifar10": dict(img_resolution=32, img_channels=3, label_dim=10, model_type="SongUNet",
                               model_channels=128, channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13,
                               embedding_type="positional", channel_mult_noise=1,
                               encoder_type="standard", decoder_type="standard", resample_filter=[1, 1]),
    "edm-ncsnpp-cifar10": dict(img_resolution=32, img_channels=3, label_dim=10, model_type="SongUNet",
                               model_channels=128, channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13,
                               embedding_type="fourier", channel_mult_noise=2,
                               encoder_type="residual", decoder_type="standard", resample_filter=[1, 3, 3, 1]),
    # EDM's `--arch=adm --cond=1` on ImageNet-64.
    "edm-adm-imagenet64": dict(img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet",
                               model_channels=192, channel_mult=[1, 2, 3, 4], num_blocks=3,
                               attn_resolutions=[32, 16, 8], dropout=0.10),
}

SMALL = {
    "ddpmpp": dict(img_resolution=8, img_channels=2, label_dim=3, model_type="SongUNet", augment_dim=2,
                   model_channels=8, channel_mult=[1, 2, 2], num_blocks=2, attn_resolutions=[4], dropout=0.0,
                   embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                   decoder_type="standard", resample_filter=[1, 1]),
    "ncsnpp": dict(img_resolution=8, img_channels=2, label_dim=3, model_type="SongUNet",
                   model_channels=8, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0,
                   embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                   decoder_type="standard", resample_filter=[1, 3, 3, 1]),
    "songunet-skip": dict(img_resolution=8, img_channels=2, label_dim=0, model_type="SongUNet",
                          model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.0,
                          embedding_type="positional", channel_mult_noise=1, encoder_type="skip",
                          decoder_type="skip", resample_filter=[1, 3, 3, 1]),
    "adm": dict(img_resolution=8, img_channels=2, label_dim=3, model_type="DhariwalUNet", augment_dim=2,
                model_channels=8, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[4, 2], dropout=0.0,
                channels_per_head=8),
}


def build(kwargs):
    return EDMPrecond(**kwargs).eval()


def randomise(net, seed):
    """Seeded non-zero values everywhere: weights ~ N(0, 1/fan_in), biases and GroupNorm
    shifts ~ N(0, 0.2²), GroupNorm scales ~ 1 + N(0, 0.2²); buffers untouched."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            r = torch.randn(p.shape, generator=g)
            leaf = name.split(".")[-2] if "." in name else name
            if leaf.startswith("norm") or leaf.endswith("_norm"):
                p.copy_(1 + 0.2 * r if name.endswith("weight") else 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.2 * r)
            else:
                p.copy_(r / math.sqrt(max(1, p[0].numel())))


def inputs(kwargs, seed, batch=4):
    g = torch.Generator().manual_seed(seed)
    c, r = kwargs["img_channels"], kwargs["img_resolution"]
    sigma = torch.tensor([0.002, 0.3, 2.5, 80.0])[:batch]
    x = torch.randn([batch, c, r, r], generator=g) * (sigma**2 + 0.25).sqrt()[:, None, None, None]
    out = {"x": x, "sigma": sigma}
    k = kwargs.get("label_dim", 0)
    if k:
        y = torch.zeros([batch, k])
        for i, cls in enumerate([0, 2, None, 1][:batch]):
            if cls is not None:
                y[i, cls] = 1.0  # row 2 stays all-zero: the null label
        out["class_labels"] = y
    if kwargs.get("augment_dim", 0):
        out["augment_labels"] = torch.randn([batch, kwargs["augment_dim"]], generator=g)
    return out


def run(net, io):
    taps = []
    with torch.no_grad():
        d = net(io["x"], io["sigma"], io.get("class_labels"), io.get("augment_labels"), taps)
    res = {"D": d}
    for t in taps:
        res[f"tap.{t.shape[-1]}"] = t
    return res


def cmd_count(_args):
    for name, kw in FULL.items():
        with torch.device("meta"):
            net = EDMPrecond(**kw)
        params = list(net.named_parameters())
        bufs = list(net.named_buffers())
        n = sum(p.numel() for _, p in params)
        aug = kw.get("augment_dim", 0)
        print(f"{name}: {n:,} parameters in {len(params)} tensors + {len(bufs)} buffers "
              f"= {len(net.state_dict())} state-dict entries (augment_dim {aug})")
        if aug:
            with torch.device("meta"):
                plain = EDMPrecond(**{**kw, "augment_dim": 0})
            pp = list(plain.parameters())
            print(f"  without augment_dim: {sum(p.numel() for p in pp):,} in {len(pp)} tensors")


def write_specs(path):
    """Names, shapes and kinds (P parameter, B buffer) of the full-size networks' state dicts."""
    lines = []
    for name, kw in FULL.items():
        with torch.device("meta"):
            net = EDMPrecond(**kw)
        params = dict(net.named_parameters())
        lines.append(f"# {name}")
        for k, v in net.state_dict(keep_vars=True).items():
            kind = "P" if k in params else "B"
            lines.append(f"{kind} {k} {','.join(str(d) for d in v.shape)}")
    path.write_text("\n".join(lines) + "\n")


def cmd_fixtures(args):
    from safetensors.torch import save_file

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_specs(out / "full-size-specs.txt")
    for i, (name, kw) in enumerate(SMALL.items()):
        torch.manual_seed(100 + i)  # the Fourier frequencies
        net = build(kw)
        randomise(net, seed=200 + i)
        io = inputs(kw, seed=300 + i)
        sd = {k: v.contiguous() for k, v in net.state_dict().items()}
        # One fixture goes through the PyTorch zip/pickle reader, the others through safetensors.
        if name == "adm":
            torch.save(sd, out / f"{name}.pt")
        else:
            save_file(sd, str(out / f"{name}.safetensors"))
        save_file({**io, **run(net, io)}, str(out / f"{name}.io.safetensors"))
        (out / f"{name}.json").write_text(json.dumps(kw, indent=1) + "\n")
        n = sum(p.numel() for p in net.parameters())
        print(f"{name}: {n} parameters, {len(sd)} state-dict entries")


def cmd_forward(args):
    from safetensors.torch import load_file, save_file

    kw = json.loads(pathlib.Path(args.kwargs).read_text())
    net = build(kw)
    if args.weights.endswith(".safetensors"):
        sd = load_file(args.weights)
    else:
        sd = torch.load(args.weights, map_location="cpu", weights_only=True)
    net.load_state_dict(sd, strict=True)
    io = load_file(args.inputs)
    save_file({k: v.contiguous() for k, v in run(net, io).items()}, args.out)


def cmd_bench(args):
    torch.set_num_threads(args.threads)
    kw = FULL["edm-ddpmpp-cifar10"]
    torch.manual_seed(0)
    net = EDMPrecond(**kw)
    net.train()
    b = args.batch
    x = torch.randn([b, 3, 32, 32])
    sigma = torch.exp(torch.randn([b]) * 1.2 - 1.2)
    y = F.one_hot(torch.arange(b) % 10, 10).float()

    def fwd():
        with torch.no_grad():
            net(x, sigma, y)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        d = net(x, sigma, y)
        (d - x).square().mean().backward()

    for label, fn in [("forward", fwd), ("forward+backward", fwd_bwd)]:
        fn()  # warm-up
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(json.dumps({"impl": "pytorch", "what": label, "batch": b, "seconds": times}))


def cmd_bench_distill(args):
    """One critic and one generator step of f-distill's `dmd2-no-gan` preset (reverse KL, no
    discriminator, DMD normaliser, inject-gradient surrogate, uniform DSM loss, AdamW with
    weight decay 0.01, gradient clip 10, generator EMA), as fdistill's FDistill does them."""
    import copy

    torch.set_num_threads(args.threads)
    kw = FULL["edm-ddpmpp-cifar10"]
    torch.manual_seed(0)
    teacher = EDMPrecond(**kw).eval().requires_grad_(False)
    gen = copy.deepcopy(teacher).train().requires_grad_(True)
    fake = copy.deepcopy(teacher).train().requires_grad_(True)
    gen_ema = copy.deepcopy(gen).eval().requires_grad_(False)
    opt_g = torch.optim.AdamW(gen.parameters(), lr=2e-6, weight_decay=0.01)
    opt_f = torch.optim.AdamW(fake.parameters(), lr=2e-6, weight_decay=0.01)
    b, sigma_init = args.batch, 80.0
    real = (torch.randn([64, 3, 32, 32]) * 0.5).clamp(-1, 1)

    def draw():
        z = torch.randn([b, 3, 32, 32])
        y = F.one_hot(torch.randint(0, 10, [b]), 10).float()
        sigma = torch.exp(torch.randn([b]) * 1.2 - 1.2)
        eps = torch.randn([b, 3, 32, 32])
        return z, y, sigma, eps

    def critic():
        z, y, sigma, eps = draw()
        with torch.no_grad():
            x0 = gen(sigma_init * z, torch.full([b], sigma_init), y)
        x_t = x0 + sigma.reshape(-1, 1, 1, 1) * eps
        _ = real[torch.randint(0, 64, [b])]
        loss = (fake(x_t, sigma, y) - x0).square().mean()
        opt_f.zero_grad(set_to_none=True)
        loss.backward()
        opt_f.step()

    def generator():
        z, y, sigma, eps = draw()
        x0 = gen(sigma_init * z, torch.full([b], sigma_init), y)
        x_t = x0 + sigma.reshape(-1, 1, 1, 1) * eps
        with torch.no_grad():
            d_t = teacher(x_t, sigma, y)
            d_f = fake(x_t, sigma, y)
            w = 1.0 / (x0 - d_t).abs().mean(dim=[1, 2, 3], keepdim=True).clamp_min(1e-8)
            g = w * (d_f - d_t)
        loss = 0.5 * (x0 - (x0 - g).detach()).square().mean()
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 10.0)
        opt_g.step()
        with torch.no_grad():
            for pe, p in zip(gen_ema.parameters(), gen.parameters()):
                pe.lerp_(p, 1 - 0.9999)

    for label, fn in [("distill critic step", critic), ("distill generator step", generator)]:
        fn()  # warm-up
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(json.dumps({"impl": "pytorch", "what": label, "batch": b, "seconds": times}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("count")
    f = sub.add_parser("fixtures")
    f.add_argument("--out", required=True)
    f = sub.add_parser("forward")
    for a in ["--kwargs", "--weights", "--inputs", "--out"]:
        f.add_argument(a, required=True)
    f = sub.add_parser("bench")
    f.add_argument("--batch", type=int, default=4)
    f.add_argument("--reps", type=int, default=5)
    f.add_argument("--threads", type=int, default=2)
    f = sub.add_parser("bench-distill")
    f.add_argument("--batch", type=int, default=4)
    f.add_argument("--reps", type=int, default=1)
    f.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    {"count": cmd_count, "fixtures": cmd_fixtures, "forward": cmd_forward, "bench": cmd_bench,
     "bench-distill": cmd_bench_distill}[args.cmd](args)


if __name__ == "__main__":
    main()
