"""Writes the PyTorch seeds of the `state-dict` fuzz target (crates/fdistill-fuzz/seeds/state-dict/).

Tiny state dicts in the layouts `StateDict::read_pytorch` accepts: the zip format (float32,
float16, float64, bfloat16, a nested dict) and the legacy pickle format. The safetensors seeds
of the same target are written by `cargo run -p fdistill-fuzz -- seeds`.

    python3 tools/fuzz_state_dict_seeds.py   # needs torch (CPU); run from the repository root
"""

import collections
import pathlib

import torch

OUT = pathlib.Path("crates/fdistill-fuzz/seeds/state-dict")


def edm_like(dtype):
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    sd["model.map_layer0.weight"] = torch.randn(4, 2, generator=g).to(dtype)
    sd["model.map_layer0.bias"] = torch.randn(4, generator=g).to(dtype)
    sd["model.enc.8x8_conv.weight"] = torch.randn(2, 1, 3, 3, generator=g).to(dtype)
    return sd


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(edm_like(torch.float32), OUT / "zip-f32.pt")
    torch.save(edm_like(torch.float16), OUT / "zip-f16.pt")
    torch.save(edm_like(torch.float64), OUT / "zip-f64.pt")
    torch.save(edm_like(torch.bfloat16), OUT / "zip-bf16.pt")
    nested = {"ema": edm_like(torch.float32), "step": 3}
    torch.save(nested, OUT / "zip-nested.pt")
    torch.save(edm_like(torch.float32), OUT / "legacy-f32.pt", _use_new_zipfile_serialization=False)
    # A view into a larger storage (offset and stride in the pickle).
    base = torch.arange(12, dtype=torch.float32)
    torch.save({"model.map_layer0.weight": base[2:10].view(4, 2)}, OUT / "zip-view.pt")


if __name__ == "__main__":
    main()
