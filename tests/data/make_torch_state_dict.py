#!/usr/bin/env python3
"""Write a `torch.save` file of a state_dict without PyTorch installed, for the tests
of `labelflow model import` (PyTorch's CPU build is not on PyPI for Linux, and its CUDA
build needs gigabytes of CUDA libraries to import).

Usage: make_torch_state_dict.py [--legacy] IN.safetensors OUT.pth

IN holds F32 tensors (as `labelflow` writes them). OUT is what
`torch.save(OrderedDict(name -> tensor), OUT)` writes: a zip archive with
`<name>/data.pkl` (a protocol-2 pickle of an OrderedDict whose tensors are
`torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`,
storages as persistent ids ('storage', torch.FloatStorage, key, 'cpu', numel)),
one `<name>/data/<key>` entry per storage (little-endian float32), `<name>/version`
and `<name>/byteorder`. With --legacy, PyTorch's layout before 1.6 (the one of
torchvision's own alexnet-owt-7be5be79.pth): five pickles in a row — the magic number,
the protocol version 1001, a sys_info dict, the state_dict (storage ids carry a sixth
element, the view metadata, None), the list of storage keys — then each storage as
an 8-byte little-endian element count and its bytes. Standard library only.
"""

import collections
import json
import pickle
import struct
import sys
import types
import zipfile


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = collections.OrderedDict()
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", (name, e["dtype"])
        b, end = e["data_offsets"]
        out[name] = (e["shape"], data[b:end])
    return out


# Stand-ins that pickle as the globals torch.load expects.
torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_mod.FloatStorage = FloatStorage
torch_mod._utils = utils_mod
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
sys.modules["torch"] = torch_mod
sys.modules["torch._utils"] = utils_mod


class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (_rebuild_tensor_v2,
                (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    legacy = False

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            if self.legacy:
                return ("storage", FloatStorage, obj.key, "cpu", obj.numel, None)
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def main(src, dst, legacy=False):
    tensors = read_safetensors(src)
    state = collections.OrderedDict()
    blobs = {}
    for i, (name, (shape, data)) in enumerate(tensors.items()):
        key = str(i)
        numel = len(data) // 4
        state[name] = Tensor(Storage(key, numel), shape)
        blobs[key] = data
    import io
    if legacy:
        with open(dst, "wb") as f:
            for obj in (0x1950A86A20F9469CFC6C, 1001,
                        {"protocol_version": 1001, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(obj, f, protocol=2)
            p = Pickler(f, protocol=2)
            p.legacy = True
            p.dump(state)
            keys = list(blobs)
            pickle.dump(keys, f, protocol=2)
            for key in keys:
                f.write(struct.pack("<Q", len(blobs[key]) // 4))
                f.write(blobs[key])
        print(f"wrote {dst} (legacy layout): {len(state)} tensors")
        return
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    root = "archive"
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", buf.getvalue())
        z.writestr(f"{root}/byteorder", "little")
        for key, data in blobs.items():
            z.writestr(f"{root}/data/{key}", data)
        z.writestr(f"{root}/version", "3\n")
    print(f"wrote {dst}: {len(state)} tensors")


if __name__ == "__main__":
    args = sys.argv[1:]
    legacy = "--legacy" in args
    args = [a for a in args if a != "--legacy"]
    main(args[0], args[1], legacy)
