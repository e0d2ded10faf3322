"""Query/key/value input projections (the reference's ``QueryKeyValueProjectionConfig`` family).

Four layouts, chosen with an attention layer's ``input_projection`` argument (a name, as
below, or the reference's class name):

* ``"combined"`` (:class:`CombinedQueryKeyValueProjection`): one stacked projection for
  queries, keys and values (``share_kv_projection=True``: keys and values share one); no
  grouped key/value heads; not for cross-attention.
* ``"separate"`` (:class:`SeparateQueryKeyValueProjection`): three projections.
* ``"query_and_key_value"`` (:class:`QueryAndKeyValueProjection`): queries, plus one
  stacked key/value projection (the default for cross-attention).
* ``"query_and_shared_key_value"`` (:class:`QueryAndSharedKeyValueProjection`): queries,
  plus one projection used as both keys and values.

Parameter layout (``torch.nn.Linear``'s ``[out, in]`` so ``F.linear`` does the work and
``torch.nn.MultiheadAttention``'s ``in_proj_weight`` loads into the combined layout): the
output axis is ``(stack, heads, units_per_head)`` flattened, heads-major, as
``MultiheadAttention`` splits its embedding. Against the reference's einsum kernels:

==============================  ===========================  =================================
sl parameter                    shape                        reference (flax) variable
==============================  ===========================  =================================
``in_proj_weight``/``_bias``    ``[S*N*H, D]`` / ``[S*N*H]``  ``query_key_value_projection``
                                                             kernel ``[D, S, N, H]``
``q_proj_weight``/``_bias``     ``[N*H, D]``                 ``query_projection`` ``[D, N, H]``
``k_proj_weight``, ``v_...``    ``[K*H, D]``                 ``key_projection``/``value_...``
``kv_proj_weight`` (stacked)    ``[2*K*H, D]``               ``key_value_projection``
                                                             ``[D, 2, K, H]``
``kv_proj_weight`` (shared)     ``[K*H, D]``                 ``shared_key_value_projection``
==============================  ===========================  =================================

(``S`` = 3, or 2 with shared key/value; ``N`` query heads, ``K`` key/value heads, ``H``
units per head, ``D`` input size.) Kernels are initialised as in the reference (flax
``lecun_normal`` with fan-in ``D``), biases with zeros.

The projection computes in ``promoted_dtype(input, weight, compute_dtype)``.
"""

from __future__ import annotations

import enum
from typing import Any

import torch
import torch.nn.functional as F

from sl.toolkit import lecun_normal_, promoted_dtype
from sl.types import MaskedSequence, Sequence

__all__ = [
    "CombinedQueryKeyValueProjection",
    "InputProjectionModule",
    "ProjectionKind",
    "QueryAndKeyValueProjection",
    "QueryAndSharedKeyValueProjection",
    "SeparateQueryKeyValueProjection",
    "make_input_projection",
]


class ProjectionKind(str, enum.Enum):
    COMBINED = "combined"
    SEPARATE = "separate"
    QUERY_AND_KEY_VALUE = "query_and_key_value"
    QUERY_AND_SHARED_KEY_VALUE = "query_and_shared_key_value"


_REFERENCE_NAMES = {
    "combinedquerykeyvalueprojection": ProjectionKind.COMBINED,
    "separatequerykeyvalueprojection": ProjectionKind.SEPARATE,
    "queryandkeyvalueprojection": ProjectionKind.QUERY_AND_KEY_VALUE,
    "queryandsharedkeyvalueprojection": ProjectionKind.QUERY_AND_SHARED_KEY_VALUE,
}


def coerce_projection_kind(owner: str, value: Any) -> ProjectionKind:
    if isinstance(value, ProjectionKind):
        return value
    if isinstance(value, type) and issubclass(value, InputProjectionModule):
        return value.projection_kind
    if isinstance(value, str):
        key = value.lower()
        for kind in ProjectionKind:
            if key in (kind.value, kind.name.lower()):
                return kind
        squeezed = key.replace("_", "")
        if squeezed in _REFERENCE_NAMES:
            return _REFERENCE_NAMES[squeezed]
    raise ValueError(
        f"{owner} expects input_projection to be one of {[k.value for k in ProjectionKind]} (or the reference's "
        f"class names, e.g. 'CombinedQueryKeyValueProjection'); got {value!r}."
    )


def _project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    b = None if bias is None else bias.to(dtype)
    return F.linear(x.to(dtype), weight.to(dtype), b)


class InputProjectionModule(torch.nn.Module):
    """Base class of the projections: ``get_qkv``/``get_q``/``get_kv`` on Sequences ``[B, T, D]``.

    Outputs are Sequences ``[B, T, heads, units_per_head]`` (MaskedSequence when the input
    is masked and there is no bias). Subclasses create their parameters in
    :meth:`_make_parameters`.
    """

    projection_kind: ProjectionKind

    def __init__(
        self,
        input_size: int,
        num_heads: int,
        num_kv_heads: int,
        units_per_head: int,
        bias: bool,
        compute_dtype: torch.dtype | None,
        *,
        kv_input_size: int | None = None,
        owner: str = "attention",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.kv_input_size = input_size if kv_input_size is None else kv_input_size
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.units_per_head = units_per_head
        self.use_bias = bias
        self.compute_dtype = compute_dtype
        self.owner = owner
        self._make_parameters(device, dtype)
        self.reset_parameters()

    # -- helpers -------------------------------------------------------------------------
    def _weight(self, name: str, rows: int, cols: int, device: Any, dtype: Any) -> None:
        self.register_parameter(
            name + "_weight", torch.nn.Parameter(torch.empty(rows, cols, device=device, dtype=dtype))
        )
        if self.use_bias:
            self.register_parameter(name + "_bias", torch.nn.Parameter(torch.empty(rows, device=device, dtype=dtype)))
        else:
            self.register_parameter(name + "_bias", None)

    def _make_parameters(self, device: Any, dtype: Any) -> None:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters(recurse=False):
            if name.endswith("_weight"):
                lecun_normal_(p, p.shape[1])
            else:
                torch.nn.init.zeros_(p)

    @property
    def param_dtype(self) -> torch.dtype:
        return next(iter(self.parameters())).dtype

    def output_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        return promoted_dtype(input_dtype, self.param_dtype, self.compute_dtype, owner=self.owner)

    def _check_input(self, x: Sequence, size: int, what: str) -> None:
        if x.values.dim() != 3 or x.values.shape[2] != size:
            raise ValueError(
                f"{self.owner} expected {what} of shape [batch, time, {size}]; got {list(x.values.shape)}."
            )

    def _apply_projection(self, x: Sequence, name: str, *split: int) -> list[Sequence]:
        dtype = self.output_dtype(x.values.dtype)
        weight = getattr(self, name + "_weight")
        bias = getattr(self, name + "_bias")
        y = _project(x.values, weight, bias, dtype)
        b, t = y.shape[:2]
        y = y.reshape(b, t, sum(split), self.units_per_head)
        parts = torch.split(y, list(split), dim=2) if len(split) > 1 else (y,)
        cls = MaskedSequence if (bias is None and isinstance(x, MaskedSequence)) else Sequence
        return [cls._trusted(p, x.mask) for p in parts]

    # -- API -----------------------------------------------------------------------------
    def get_qkv(self, x: Sequence) -> tuple[Sequence, Sequence, Sequence]:
        q = self.get_q(x)
        k, v = self.get_kv(x)
        return q, k, v

    def get_q(self, x: Sequence) -> Sequence:
        self._check_input(x, self.input_size, "an input")
        return self._apply_projection(x, "q_proj", self.num_heads)[0]

    def get_kv(self, x: Sequence) -> tuple[Sequence, Sequence]:
        raise NotImplementedError


class CombinedQueryKeyValueProjection(InputProjectionModule):
    """One stacked projection ``in_proj_weight [S*N*H, D]`` (S = 3, or 2 with ``share_kv``)."""

    projection_kind = ProjectionKind.COMBINED

    def __init__(self, *args: Any, share_kv: bool = False, **kwargs: Any) -> None:
        self.share_kv = bool(share_kv)
        super().__init__(*args, **kwargs)
        if self.num_heads != self.num_kv_heads:
            raise ValueError(
                f"{self.owner}: the combined query/key/value projection needs num_kv_heads == num_heads; got "
                f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}. Use input_projection='separate', "
                "'query_and_key_value' or 'query_and_shared_key_value' for grouped key/value heads."
            )

    @property
    def num_stacked(self) -> int:
        return 2 if self.share_kv else 3

    def _make_parameters(self, device: Any, dtype: Any) -> None:
        rows = self.num_stacked * self.num_heads * self.units_per_head
        self._weight("in_proj", rows, self.input_size, device, dtype)

    def get_qkv(self, x: Sequence) -> tuple[Sequence, Sequence, Sequence]:
        self._check_input(x, self.input_size, "an input")
        parts = self._apply_projection(x, "in_proj", *([self.num_heads] * self.num_stacked))
        if self.share_kv:
            q, k = parts
            return q, k, k
        q, k, v = parts
        return q, k, v

    def get_q(self, x: Sequence) -> Sequence:
        raise ValueError(f"{self.owner}: the combined projection cannot project queries alone (cross-attention).")

    def get_kv(self, x: Sequence) -> tuple[Sequence, Sequence]:
        raise ValueError(f"{self.owner}: the combined projection cannot project keys/values alone (cross-attention).")


class SeparateQueryKeyValueProjection(InputProjectionModule):
    """``q_proj_weight [N*H, D]``, ``k_proj_weight``/``v_proj_weight [K*H, D_kv]``."""

    projection_kind = ProjectionKind.SEPARATE

    def _make_parameters(self, device: Any, dtype: Any) -> None:
        self._weight("q_proj", self.num_heads * self.units_per_head, self.input_size, device, dtype)
        self._weight("k_proj", self.num_kv_heads * self.units_per_head, self.kv_input_size, device, dtype)
        self._weight("v_proj", self.num_kv_heads * self.units_per_head, self.kv_input_size, device, dtype)

    def get_kv(self, x: Sequence) -> tuple[Sequence, Sequence]:
        self._check_input(x, self.kv_input_size, "a key/value source")
        k = self._apply_projection(x, "k_proj", self.num_kv_heads)[0]
        return k, self._apply_projection(x, "v_proj", self.num_kv_heads)[0]


class QueryAndKeyValueProjection(InputProjectionModule):
    """``q_proj_weight [N*H, D]`` and a stacked ``kv_proj_weight [2*K*H, D_kv]``."""

    projection_kind = ProjectionKind.QUERY_AND_KEY_VALUE

    def _make_parameters(self, device: Any, dtype: Any) -> None:
        self._weight("q_proj", self.num_heads * self.units_per_head, self.input_size, device, dtype)
        self._weight("kv_proj", 2 * self.num_kv_heads * self.units_per_head, self.kv_input_size, device, dtype)

    def get_kv(self, x: Sequence) -> tuple[Sequence, Sequence]:
        self._check_input(x, self.kv_input_size, "a key/value source")
        k, v = self._apply_projection(x, "kv_proj", self.num_kv_heads, self.num_kv_heads)
        return k, v


class QueryAndSharedKeyValueProjection(InputProjectionModule):
    """``q_proj_weight [N*H, D]`` and ``kv_proj_weight [K*H, D_kv]`` used as keys and values."""

    projection_kind = ProjectionKind.QUERY_AND_SHARED_KEY_VALUE

    def _make_parameters(self, device: Any, dtype: Any) -> None:
        self._weight("q_proj", self.num_heads * self.units_per_head, self.input_size, device, dtype)
        self._weight("kv_proj", self.num_kv_heads * self.units_per_head, self.kv_input_size, device, dtype)

    def get_kv(self, x: Sequence) -> tuple[Sequence, Sequence]:
        self._check_input(x, self.kv_input_size, "a key/value source")
        kv = self._apply_projection(x, "kv_proj", self.num_kv_heads)[0]
        return kv, kv


_CLASSES: dict[ProjectionKind, type[InputProjectionModule]] = {
    ProjectionKind.COMBINED: CombinedQueryKeyValueProjection,
    ProjectionKind.SEPARATE: SeparateQueryKeyValueProjection,
    ProjectionKind.QUERY_AND_KEY_VALUE: QueryAndKeyValueProjection,
    ProjectionKind.QUERY_AND_SHARED_KEY_VALUE: QueryAndSharedKeyValueProjection,
}


def make_input_projection(
    owner: str,
    kind: ProjectionKind,
    *,
    input_size: int,
    num_heads: int,
    num_kv_heads: int,
    units_per_head: int,
    bias: bool,
    compute_dtype: torch.dtype | None,
    share_kv_projection: bool = False,
    kv_input_size: int | None = None,
    allow_combined: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> InputProjectionModule:
    if kind is ProjectionKind.COMBINED and not allow_combined:
        raise ValueError(
            f"{owner} attends to a separate source, so it cannot use the combined query/key/value projection; "
            "use input_projection='query_and_key_value' (the default), 'separate' or 'query_and_shared_key_value'."
        )
    if share_kv_projection and kind is not ProjectionKind.COMBINED:
        raise ValueError(
            f"{owner}: share_kv_projection applies to input_projection='combined'; for another layout with shared "
            "keys and values use input_projection='query_and_shared_key_value'."
        )
    common = {
        "input_size": input_size,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "units_per_head": units_per_head,
        "bias": bias,
        "compute_dtype": compute_dtype,
        "kv_input_size": kv_input_size,
        "owner": owner,
        "device": device,
        "dtype": dtype,
    }
    if kind is ProjectionKind.COMBINED:
        return CombinedQueryKeyValueProjection(share_kv=share_kv_projection, **common)  # type: ignore[arg-type]
    return _CLASSES[kind](**common)  # type: ignore[arg-type]
