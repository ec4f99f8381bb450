#!/usr/bin/env python3
"""Convert an EDM network pickle (e.g. edm-cifar10-32x32-cond-vp.pkl) into a safetensors state
dict plus a JSON of its constructor arguments, both readable by fdistill without Python.

The pickle references EDM's classes, so EDM's repository (github.com/NVlabs/edm) must be on the
path; torch and safetensors must be installed:

    PYTHONPATH=/path/to/edm python tools/edm_pickle_to_safetensors.py NET.pkl OUT.safetensors

writes OUT.safetensors (keys `model.…`, the EMA network) and OUT.json (EDMPrecond's keyword
arguments: img_resolution, img_channels, label_dim, model_type, …).
"""

import json
import pickle
import sys

from safetensors.torch import save_file

src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    net = pickle.load(f)["ema"]
if type(net).__name__ != "EDMPrecond":
    sys.exit(f"{src}: the network is a {type(net).__name__}; fdistill imports EDMPrecond networks")
save_file({k: v.detach().float().contiguous() for k, v in net.state_dict().items()}, dst)
kwargs = dict(getattr(net, "init_kwargs", {}))
with open(dst.rsplit(".", 1)[0] + ".json", "w") as f:
    json.dump(kwargs, f, indent=1, default=list)
print(f"wrote {dst} ({len(net.state_dict())} tensors) and its kwargs: {sorted(kwargs)}")
