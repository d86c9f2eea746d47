"""Nested training state as named tensors plus a JSON skeleton.

A checkpoint holds state dicts of many shapes: a model's flat name -> tensor
mapping, an optimizer's ``{"state": {0: {...}}, "param_groups": [...]}``, RNG
states made of tuples, numpy arrays and Python ints. :func:`flatten` splits
such a tree into the tensors (stored as safetensors tensors) and a JSON
skeleton that keeps everything else and refers to the tensors by name;
:func:`unflatten` puts the tree back together, so it round-trips exactly:
tuples stay tuples, int dict keys stay ints, ``nan`` and ``inf`` stay floats,
numpy arrays come back as numpy arrays. Dicts come back as plain dicts in
their original order (a state dict's ``OrderedDict`` too).

The skeleton is plain JSON. A JSON object with exactly one key that starts
with ``$`` is a tagged value:

``{"$tensor": key}``
    a torch tensor stored under ``key``.
``{"$ndarray": key}``
    a numpy array stored under ``key`` (returned as numpy).
``{"$tuple": [...]}``
    a tuple.
``{"$float": "nan" | "inf" | "-inf"}``
    a float JSON cannot spell.
``{"$numpy": [dtype, value]}``
    a numpy scalar such as ``np.int64(3)``.
``{"$dict": [[key, value], ...]}``
    a dict whose keys are not all strings, or that has a key starting
    with ``$``; keys are encoded like values.

Any other JSON object is a dict with string keys.

Tensors that are the same view of the same memory (tied weights, a tensor
that appears twice) are stored once and both places refer to the same key, so
they load back as one tensor object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from onthefly.errors import ConfigError, CorruptFileError

__all__ = ["flatten", "unflatten"]

_TAGS = ("$tensor", "$ndarray", "$tuple", "$float", "$numpy", "$dict")
_NUMPY_SCALAR_KINDS = "biuf"  # bool, signed, unsigned, float


def flatten(tree: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split nested state into a JSON skeleton and named tensors.

    Tensors are detached, with any lazy conjugate/negative bit resolved, but
    not copied or moved: the caller decides how to write them. Numpy arrays
    become tensors that share their memory (made contiguous, little-endian).

    Args:
        tree: part name -> nested state, for example
            ``{"model": model.state_dict(), "optimizer": opt.state_dict()}``.
            Leaves may be tensors, numpy arrays and scalars, ``None``, bools,
            ints, floats (``nan``/``inf`` too) and strings; containers may be
            dicts (any encodable hashable keys), lists and tuples.

    Returns:
        ``(skeleton, tensors)``: the skeleton is JSON-serialisable and has the
        same top-level keys as ``tree``; ``tensors`` maps each storage key
        (the dotted path of its first occurrence, such as
        ``"optimizer.state.0.exp_avg"``) to a tensor.

    Raises:
        ConfigError: a value of another type, a sparse, quantized or meta
            tensor; the message names its path.

    Example:
        >>> skeleton, tensors = flatten({"rng": {"torch": torch.zeros(2, dtype=torch.uint8), "seed": (1, 2)}})
        >>> skeleton
        {'rng': {'torch': {'$tensor': 'rng.torch'}, 'seed': {'$tuple': [1, 2]}}}
        >>> list(tensors)
        ['rng.torch']
    """
    flattener = _Flattener()
    skeleton = {}
    for part, value in tree.items():
        if not isinstance(part, str) or not part or part.startswith("$"):
            raise ConfigError(
                f"state part name {part!r} is not usable: name parts with non-empty strings not starting with '$'"
            )
        skeleton[part] = flattener.encode(value, (part,))
    return skeleton, flattener.tensors


def unflatten(
    skeleton: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
) -> dict[str, Any]:
    """Rebuild the tree :func:`flatten` split, from its skeleton and tensors.

    Args:
        skeleton: the JSON skeleton, part name -> encoded state.
        tensors: storage key -> tensor, as read back. A key referenced twice
            yields the same tensor object both times.
        source: what to name in error messages (usually the file path).

    Returns:
        part name -> state, equal in structure and types to what was flattened.

    Raises:
        CorruptFileError: the skeleton is malformed, uses an unknown tag, or
            refers to a tensor that ``tensors`` lacks.

    Example:
        >>> unflatten({"x": {"$tuple": [1, {"$float": "nan"}]}}, {})
        {'x': (1, nan)}
    """
    if not isinstance(skeleton, Mapping):
        raise CorruptFileError(f"{source}: the state skeleton is not a JSON object; the file is damaged")
    decoder = _Decoder(tensors, source)
    return {part: decoder.decode(value, (part,)) for part, value in skeleton.items()}


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


class _Flattener:
    """Walks one tree, collecting tensors and remembering those already seen."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._seen: dict[tuple[Any, ...], str] = {}

    def encode(self, value: Any, path: tuple[Any, ...]) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return _encode_float(float(value))
        if isinstance(value, torch.Tensor):
            return {"$tensor": self._add_tensor(value, path)}
        if isinstance(value, np.ndarray):
            return {"$ndarray": self._add_array(value, path)}
        if isinstance(value, np.generic):
            return self._encode_numpy_scalar(value, path)
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, (*path, i)) for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            return self._encode_mapping(value, path)
        raise ConfigError(
            f"{_dotted(path)} is a {type(value).__module__}.{type(value).__qualname__}: a checkpoint holds "
            "tensors, numpy arrays, numbers, strings, None, lists, tuples and dicts; "
            "convert it to one of these or leave it out of the state"
        )

    def _encode_mapping(self, value: Mapping[Any, Any], path: tuple[Any, ...]) -> Any:
        plain = all(isinstance(k, str) and not k.startswith("$") for k in value)
        if plain:
            return {str(k): self.encode(v, (*path, k)) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if isinstance(k, (torch.Tensor, np.ndarray, list, Mapping)):
                raise ConfigError(
                    f"{_dotted(path)} has a key of type {type(k).__name__}: dict keys in a checkpoint must be "
                    "strings, numbers, bools, None or tuples of these; convert the key"
                )
            items.append([self.encode(k, (*path, "<key>")), self.encode(v, (*path, k))])
        return {"$dict": items}

    def _encode_numpy_scalar(self, value: np.generic, path: tuple[Any, ...]) -> Any:
        if value.dtype.kind not in _NUMPY_SCALAR_KINDS:
            raise ConfigError(
                f"{_dotted(path)} is a numpy {value.dtype} scalar: only bool, integer and float numpy "
                "scalars can be stored; wrap it in an array or convert it with .item()"
            )
        return {"$numpy": [value.dtype.name, self.encode(value.item(), path)]}

    def _add_tensor(self, tensor: torch.Tensor, path: tuple[Any, ...]) -> str:
        where = _dotted(path)
        if tensor.layout != torch.strided:
            raise ConfigError(f"{where} is a {tensor.layout} tensor: only dense tensors can be stored; use .to_dense()")
        if tensor.is_quantized:
            raise ConfigError(f"{where} is a quantized tensor: store .dequantize() or its int representation")
        if tensor.device.type == "meta":
            raise ConfigError(f"{where} is on the meta device and has no data: materialise it before saving")
        identity = None
        if tensor.numel() > 0:
            identity = (
                tensor.device,
                tensor.data_ptr(),
                tensor.dtype,
                tuple(tensor.shape),
                tuple(tensor.stride()),
            )
            if identity in self._seen:
                return self._seen[identity]
        key = self._unique_key(where)
        self.tensors[key] = tensor.detach().resolve_conj().resolve_neg()
        if identity is not None:
            self._seen[identity] = key
        return key

    def _add_array(self, array: np.ndarray, path: tuple[Any, ...]) -> str:
        where = _dotted(path)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        array = np.ascontiguousarray(array)
        try:
            tensor = torch.from_numpy(array)
        except TypeError as exc:
            raise ConfigError(
                f"{where} is a numpy array of dtype {array.dtype}, which a checkpoint cannot hold: "
                "convert it to a numeric dtype"
            ) from exc
        key = self._unique_key(where)
        self.tensors[key] = tensor
        return key

    def _unique_key(self, where: str) -> str:
        key, n = where, 1
        while key in self.tensors or key == "__metadata__":
            key, n = f"{where}~{n}", n + 1
        return key


def _encode_float(value: float) -> Any:
    if math.isnan(value):
        return {"$float": "nan"}
    if math.isinf(value):
        return {"$float": "inf" if value > 0 else "-inf"}
    return value


class _Decoder:
    """Walks one skeleton, resolving tensor references."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], source: str) -> None:
        self._tensors = tensors
        self._source = source
        self._arrays: dict[str, np.ndarray] = {}

    def decode(self, node: Any, path: tuple[Any, ...]) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v, (*path, i)) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            self._fail(path, f"holds a {type(node).__name__}")
        if len(node) == 1:
            [(tag, body)] = node.items()
            if tag.startswith("$"):
                return self._decode_tagged(tag, body, path)
        return {k: self.decode(v, (*path, k)) for k, v in node.items()}

    def _decode_tagged(self, tag: str, body: Any, path: tuple[Any, ...]) -> Any:
        if tag == "$tensor":
            return self._tensor(body, path)
        if tag == "$ndarray":
            if body not in self._arrays:
                self._arrays[body] = self._tensor(body, path).numpy()
            return self._arrays[body]
        if tag == "$tuple" and isinstance(body, list):
            return tuple(self.decode(v, (*path, i)) for i, v in enumerate(body))
        if tag == "$float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "$numpy" and isinstance(body, list) and len(body) == 2:
            try:
                return np.dtype(body[0]).type(self.decode(body[1], path))
            except TypeError:
                self._fail(path, f"names an unknown numpy dtype {body[0]!r}")
        if tag == "$dict" and isinstance(body, list):
            out = {}
            for item in body:
                if not isinstance(item, list) or len(item) != 2:
                    self._fail(path, "has a malformed dict entry")
                key = self.decode(item[0], (*path, "<key>"))
                out[key] = self.decode(item[1], (*path, key))
            return out
        if tag not in _TAGS:
            self._fail(path, f"uses the unknown tag {tag!r} (written by a newer OnTheFly? upgrade onthefly-ai)")
        self._fail(path, f"has a malformed {tag!r} entry")

    def _tensor(self, key: Any, path: tuple[Any, ...]) -> torch.Tensor:
        if not isinstance(key, str) or key not in self._tensors:
            self._fail(path, f"refers to tensor {key!r}, which the file does not hold")
        return self._tensors[key]

    def _fail(self, path: tuple[Any, ...], what: str) -> None:
        raise CorruptFileError(
            f"{self._source}: the state skeleton at {_dotted(path)} {what}; the file is damaged or not "
            "an OnTheFly checkpoint, use an earlier checkpoint"
        )
