"""``GmmAttention``: Graves-style Gaussian-mixture location attention over a source.

Reference: ``attention/gmm_attention.py``. For each query step an MLP
(``relu(x @ hidden)`` then ``@ output + bias``) gives per head and mixture component a
prior logit, a position offset and a scale; the attention weight of source step ``j`` is
``sum_m prior_m * sqrt(2 pi var_m + 1e-8) * exp(-(j - mean_m)^2 / (2 var_m + 1e-9))``
(the reference's arithmetic, including its normalisation factor), zero on invalid source
steps, and the output is the weighted sum of the source values per head:
``[B, T, num_heads, source_size]``.

``monotonic=False``: ``mean = softplus(offset)`` (``max_offset > 0``: softly capped at
``max_offset``). ``monotonic=True``: means move forward, ``mean_t = mean_{t-1} +
softplus(offset_t)``. The reference runs that recursion as a scan in layer mode; it has a
parallel form, a cumulative sum of the offsets, which is what both modes compute here.

Deviation: only *valid* query steps advance the monotonic means (the reference also adds
the offsets computed at invalid steps). The two agree whenever the invalid steps come
after the valid ones (end padding); this way results are invariant to padding anywhere,
and behind a layer with step-wise latency its invalid filler steps do not move the means.

Parameters, in the reference's einsum layouts: ``hidden_weight [input_size, num_heads,
units_per_head]`` (no bias), ``output_weight [num_heads, units_per_head, num_components,
3]`` and ``output_bias [num_heads, num_components, 3]`` (last axis: prior, offset, scale).
Output dtype: the input's; the mixture is computed in at least float32 (so a low-precision
stream's accumulated means stay exact enough for step and layer to agree). Step state:
``[B, 1, num_heads, num_components]`` component positions in at least float32
(monotonic; the reference keeps the input dtype), else ``()``. Emits: ``CrossAttentionEmits({source_name: weights})``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from sl.layer import PreservesType, SequenceLayer
from sl.lazy import LazyInputSize
from sl.toolkit import check_positive_int, lecun_normal_, state_full
from sl.types import ChannelSpec, Constants, Emits, ReceptiveField, Sequence, State
from sl_attention._base import get_source
from sl_attention.emits import CrossAttentionEmits

__all__ = ["GmmAttention"]


class GmmAttention(LazyInputSize, PreservesType, SequenceLayer):
    """Gaussian-mixture attention over ``constants[source_name]`` (see the module docstring).
    ``input_size=None`` infers it at the first call (``sl.lazy``)."""

    lazy_input_arg = "input_size"
    lazy_state_key = "hidden_weight"
    lazy_state_axis = 0
    input_size: int | None

    def __init__(
        self,
        input_size: int | None = None,
        num_heads: int | None = None,
        units_per_head: int | None = None,
        num_components: int | None = None,
        source_name: str | None = None,
        monotonic: bool | None = None,
        source_size: int | None = None,
        *,
        output_bias: bool = True,
        init_offset_bias: float = 0.0,
        init_scale_bias: float = 0.0,
        max_offset: float = -1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not isinstance(source_name, str) or not source_name:
            raise ValueError(f"{owner} expects source_name to be a non-empty string; got {source_name!r}.")
        self.source_name = source_name
        self.num_heads = check_positive_int(owner, "num_heads", num_heads)
        self.units_per_head = check_positive_int(owner, "units_per_head", units_per_head)
        self.num_components = check_positive_int(owner, "num_components", num_components)
        if monotonic is None:
            raise TypeError(f"{owner} needs monotonic=True or False (as the reference's config does).")
        self.monotonic = bool(monotonic)
        self.source_size = None if source_size is None else check_positive_int(owner, "source_size", source_size)
        self.use_output_bias = bool(output_bias)
        self.init_offset_bias = float(init_offset_bias)
        self.init_scale_bias = float(init_scale_bias)
        self.max_offset = float(max_offset)
        self._factory: dict[str, Any] = {"device": device, "dtype": dtype}
        if input_size is None:
            self.input_size = None
            self._register_lazy_loading()
        else:
            self._make_parameters(check_positive_int(owner, "input_size", input_size))

    def _input_size(self, input_shape: tuple[int, ...]) -> int:
        if len(input_shape) != 1:
            raise ValueError(
                f"{type(self).__name__} expects inputs [batch, time, channels]; got channel shape {tuple(input_shape)}."
            )
        return int(input_shape[0])

    def _make_parameters(self, size: int) -> None:
        device, dtype = self._factory["device"], self._factory["dtype"]
        self.input_size = size
        n, u, m = self.num_heads, self.units_per_head, self.num_components
        self.hidden_weight = torch.nn.Parameter(torch.empty(self.input_size, n, u, device=device, dtype=dtype))
        self.output_weight = torch.nn.Parameter(torch.empty(n, u, m, 3, device=device, dtype=dtype))
        self.output_bias: torch.nn.Parameter | None
        if self.use_output_bias:
            self.output_bias = torch.nn.Parameter(torch.empty(n, m, 3, device=device, dtype=dtype))
        else:
            self.register_parameter("output_bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """flax ``lecun_normal`` kernels (fan-in: input size, units per head), zero bias."""
        if self.input_size is None:
            return  # created at the first call
        lecun_normal_(self.hidden_weight, self.input_size)
        lecun_normal_(self.output_weight, self.units_per_head)
        if self.output_bias is not None:
            torch.nn.init.zeros_(self.output_bias)

    # -- metadata ------------------------------------------------------------------------
    @property
    def receptive_field_per_step(self) -> dict[int, ReceptiveField]:
        return {0: (-math.inf if self.monotonic else 0, 0)}

    def _source_channels(self, constants: Constants | None) -> int:
        if constants is not None and self.source_name in constants:
            source = get_source(self, constants, self.source_name)
            size = int(source.values.shape[2])
            if self.source_size is not None and size != self.source_size:
                raise ValueError(
                    f"{type(self).__name__} was built with source_size={self.source_size}, but "
                    f"constants[{self.source_name!r}] has {size} channels."
                )
            return size
        if self.source_size is None:
            get_source(self, constants, self.source_name)  # raises naming the missing constant
        return int(self.source_size)  # type: ignore[arg-type]

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        self._ensure_built(tuple(input_shape))
        if tuple(input_shape) != (self.input_size,):
            raise ValueError(
                f"{type(self).__name__} expects inputs [batch, time, {self.input_size}]; got channel shape "
                f"{tuple(input_shape)}."
            )
        return (self.num_heads, self._source_channels(constants))

    # -- computation -----------------------------------------------------------------------
    def _mixture(self, x: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Priors (softmax), offsets (softplus) and variances, each ``[B, T, N, M]``."""
        dtype = torch.promote_types(x.values.dtype, torch.float32)
        values = x.mask_invalid().values.to(dtype)
        hidden = F.relu(torch.einsum("btc,cnu->btnu", values, self.hidden_weight.to(dtype)))
        out = torch.einsum("btnu,numl->btnml", hidden, self.output_weight.to(dtype))
        if self.output_bias is not None:
            out = out + self.output_bias.to(dtype)
        prior_logits, offset_logits, scale_logits = out.unbind(-1)
        offset_logits = offset_logits + self.init_offset_bias
        scale_logits = scale_logits + self.init_scale_bias
        priors = torch.softmax(prior_logits, -1)
        variances = F.softplus(scale_logits) ** 2
        if self.max_offset > 0:
            offsets = F.softplus(offset_logits) - F.softplus(offset_logits - self.max_offset)
        else:
            offsets = F.softplus(offset_logits)
        return priors, offsets, variances

    def _attend(
        self, x: Sequence, source: Sequence, positions: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor
    ) -> tuple[Sequence, Emits]:
        dtype = x.values.dtype
        s = source.values.shape[1]
        j = torch.arange(s, device=positions.device, dtype=positions.dtype)[None, None, None, :, None]
        means = positions[:, :, :, None, :]
        var = variances[:, :, :, None, :]
        scaled_priors = priors[:, :, :, None, :] * torch.sqrt(2 * math.pi * var + 1e-8)
        weights = (scaled_priors * torch.exp(-((j - means) ** 2) / (2 * var + 1e-9))).sum(-1)  # [B, T, N, S]
        weights = torch.where(source.mask[:, None, None, :], weights, torch.zeros((), dtype=weights.dtype))
        src = source.mask_invalid().values.to(weights.dtype)
        context = torch.einsum("btns,bsc->btnc", weights, src).to(dtype)
        weights = weights.to(dtype)
        emits = CrossAttentionEmits({self.source_name: Sequence._trusted(weights, x.mask)})
        return Sequence._trusted(context, x.mask), emits

    def _source(self, x: Sequence, constants: Constants | None) -> Sequence:
        source = get_source(self, constants, self.source_name)
        self._source_channels(constants)
        if source.values.shape[0] != x.values.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: constants[{self.source_name!r}] has batch size {source.values.shape[0]}, "
                f"but the input has batch size {x.values.shape[0]}; they must match."
            )
        return source

    def _positions(self, x: Sequence, offsets: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        if not self.monotonic:
            return offsets
        gated = torch.where(x.mask[:, :, None, None], offsets, torch.zeros((), dtype=offsets.dtype))
        start = previous if previous is not None else torch.zeros_like(offsets[:, :1])
        return start.to(offsets.dtype) + torch.cumsum(gated, dim=1)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return self.layer_with_emits(x, training=training, constants=constants)[0]

    def layer_with_emits(
        self, x: Sequence, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, Emits]:
        self.get_output_shape(x.channel_shape, constants=constants)
        source = self._source(x, constants)
        priors, offsets, variances = self._mixture(x)
        positions = self._positions(x, offsets, None)
        return self._attend(x, source, positions, priors, variances)

    def get_initial_state(
        self, batch_size: int, input_spec: ChannelSpec, *, training: bool, constants: Constants | None = None
    ) -> State:
        if not self.monotonic:
            return ()
        dtype = torch.promote_types(input_spec.dtype, torch.float32)
        return state_full(self, (batch_size, 1, self.num_heads, self.num_components), 0, dtype)

    def step(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State]:
        y, state, _ = self.step_with_emits(x, state, training=training, constants=constants)
        return y, state

    def step_with_emits(
        self, x: Sequence, state: State, *, training: bool, constants: Constants | None = None
    ) -> tuple[Sequence, State, Emits]:
        self.get_output_shape(x.channel_shape, constants=constants)
        source = self._source(x, constants)
        priors, offsets, variances = self._mixture(x)
        positions = self._positions(x, offsets, state if self.monotonic else None)
        y, emits = self._attend(x, source, positions, priors, variances)
        if self.monotonic:
            new_state = positions[:, -1:].to(state.dtype) if x.values.shape[1] else state
            return y, new_state, emits
        return y, state, emits
