"""Read a ``.safetensors`` file one tensor at a time with plain reads (no memory map).

``safe_open`` maps the whole file: every page it touched counts in the process's resident memory until
the file is closed, so casting an 8 GiB fp32 file to bf16 peaks at 12 GiB resident. Reading each tensor
into its own buffer keeps the peak at the loaded weights plus the largest tensor.
"""

from __future__ import annotations

import json
import math
import os
import struct

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


class SafetensorsReader:
    """``with SafetensorsReader(path) as f: f.keys(); f.get(key)`` -> a fresh CPU tensor per call."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.file = open(self.path, "rb")  # closed by __exit__
        size = os.fstat(self.file.fileno()).st_size
        try:
            (n,) = struct.unpack("<Q", self.file.read(8))
            if n > size - 8:
                raise ValueError(f"header length {n} exceeds the file size {size}")
            header = json.loads(self.file.read(n))
        except (struct.error, ValueError) as e:
            self.file.close()
            raise ValueError(f"{self.path} is not a safetensors file ({e}); expected model.safetensors") from e
        header.pop("__metadata__", None)
        self.start, self.header = 8 + n, header
        for key, info in header.items():
            begin, end = info["data_offsets"]
            item = torch.empty(0, dtype=DTYPES[info["dtype"]]).element_size() if info["dtype"] in DTYPES else 0
            if not item or end - begin != math.prod(info["shape"]) * item or self.start + end > size:
                self.file.close()
                raise ValueError(f"{self.path}: tensor {key!r} has a corrupt entry {info}; re-download the file")

    def keys(self) -> list[str]:
        return list(self.header)

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key``, read from disk into its own buffer."""
        info = self.header[key]
        begin, end = info["data_offsets"]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        self.file.seek(self.start + begin)
        if end > begin and self.file.readinto(buf.numpy()) != end - begin:
            raise ValueError(f"{self.path}: tensor {key!r} is truncated; re-download the file")
        return buf.view(DTYPES[info["dtype"]]).reshape(info["shape"])

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()
