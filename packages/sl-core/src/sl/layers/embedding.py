"""Integer-input layers: Embedding, EmbeddingTranspose (tied logits), OneHot (reference ``simple.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sl.initializers import lecun_normal_
from sl.layer import Stateless
from sl.toolkit import check_float_dtype, check_in_stream, check_positive_int
from sl.types import Constants, Sequence

__all__ = ["Embedding", "EmbeddingTranspose", "OneHot"]


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _check_integer_input(owner: str, dtype: torch.dtype) -> None:
    if not _is_integer(dtype):
        raise TypeError(f"{owner} expected an integer input dtype; got {dtype}.")


def embed_init_(weight: torch.Tensor) -> torch.Tensor:
    """The reference default (``flax.linen.linear.default_embed_init``): each entry is a
    truncated normal with variance ``1 / dimension``, so embedding vectors have norm ~1."""
    return lecun_normal_(weight, weight.shape[-1])


class Embedding(Stateless):
    """Looks up ``[num_embeddings, dimension]`` vectors for integer ids ``[B, T, *C]``.

    Output ``[B, T, *C, dimension]`` in ``compute_dtype`` (default: the weight's dtype).
    Ids of invalid steps are never looked up (they may hold anything); the output
    at invalid steps is the embedding of id 0, so it is not a MaskedSequence.

    Out-of-range ids on valid steps raise a ``ValueError`` in eager CPU ``layer`` and
    ``step``; on an accelerator and under ``torch.compile`` they trip an asynchronous
    device assertion instead (no host sync), see ``sl.toolkit.check_in_stream``.
    """

    def __init__(
        self,
        num_embeddings: int,
        dimension: int,
        *,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_embeddings = check_positive_int(name, "num_embeddings", num_embeddings)
        self.dimension = check_positive_int(name, "dimension", dimension)
        self.compute_dtype = check_float_dtype(type(self).__name__, "compute_dtype", compute_dtype, complex_ok=True)
        self.weight = torch.nn.Parameter(torch.empty((num_embeddings, dimension), device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        embed_init_(self.weight)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return (*input_shape, self.dimension)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        _check_integer_input(type(self).__name__, input_dtype)
        return self.compute_dtype if self.compute_dtype is not None else self.weight.dtype

    def _check_ids(self, x: Sequence) -> None:
        ids = x.values
        bad = ((ids < 0) | (ids >= self.num_embeddings)) & x.expanded_mask()

        def describe() -> str:
            found = ids[bad]
            return (
                f"expected ids in [0, {self.num_embeddings}) on valid steps; got ids in "
                f"[{int(found.min())}, {int(found.max())}] ({int(bad.sum())} out of range)."
            )

        check_in_stream(self, ~bad, describe)

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        _check_integer_input(type(self).__name__, x.dtype)
        self._check_ids(x)
        ids = torch.where(x.expanded_mask(), x.values, torch.zeros((), dtype=x.dtype, device=x.device))
        weight = self.weight if self.compute_dtype is None else self.weight.to(self.compute_dtype)
        return Sequence(F.embedding(ids.long(), weight), x.mask)

    def attend(
        self,
        x: Sequence,
        embedding_dtype: torch.dtype | None = None,
        compute_dtype: torch.dtype | None = None,
    ) -> Sequence:
        """Logits ``x @ weight.T`` (``[..., dimension] -> [..., num_embeddings]``) for tied outputs.

        ``embedding_dtype`` casts the table first; the product runs in ``compute_dtype``
        (default: this layer's ``compute_dtype``, else the promoted dtype of both).
        Keeps the masked state of ``x`` (a linear map without bias).
        """
        if not x.channel_shape or x.channel_shape[-1] != self.dimension:
            raise ValueError(
                f"{type(self).__name__}.attend expected a query with channel shape (..., {self.dimension}); "
                f"got {x.channel_shape}."
            )
        weight = self.weight if embedding_dtype is None else self.weight.to(embedding_dtype)
        dtype = compute_dtype or self.compute_dtype or torch.promote_types(x.dtype, weight.dtype)
        return type(x)._trusted(F.linear(x.values.to(dtype), weight.to(dtype)), x.mask)


class EmbeddingTranspose(Stateless):
    """Output logits from a bound :class:`Embedding`'s table: ``x @ weight.T (+ bias)``.

    The Embedding is a child module, so its weight is shared with every other user of
    the same instance (``Serial(emb, ..., EmbeddingTranspose(emb))`` ties input and
    output embeddings, and ``state_dict`` lists the table under both names).
    The config holds the Embedding's nested config: ``from_config`` builds a *new*,
    untied Embedding. To restore tying after rebuilding a model, construct the
    EmbeddingTranspose from the rebuilt Embedding instance (or load a state dict into
    both names from the same tensor and assign ``et.embedding = emb``).

    ``dtype`` is the bias dtype (default: the table's); ``compute_dtype`` overrides the
    Embedding's for the product.
    """

    def __init__(
        self,
        embedding: Embedding,
        bias: bool = True,
        *,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(embedding, Embedding):
            raise TypeError(f"{type(self).__name__} expected an sl Embedding layer; got {type(embedding).__name__}.")
        self.embedding = embedding
        self.compute_dtype = check_float_dtype(type(self).__name__, "compute_dtype", compute_dtype, complex_ok=True)
        self.param_dtype = dtype
        if bias:
            bias_dtype = dtype if dtype is not None else embedding.weight.dtype
            bias_device = device if device is not None else embedding.weight.device
            self.bias: torch.nn.Parameter | None = torch.nn.Parameter(
                torch.zeros((embedding.num_embeddings,), device=bias_device, dtype=bias_dtype)
            )
        else:
            self.register_parameter("bias", None)

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        if not input_shape or input_shape[-1] != self.embedding.dimension:
            raise ValueError(
                f"{type(self).__name__} expected input channel shape (..., {self.embedding.dimension}) (the "
                f"embedding dimension); got {tuple(input_shape)}."
            )
        return (*input_shape[:-1], self.embedding.num_embeddings)

    def _param_dtype(self) -> torch.dtype:
        return self.param_dtype if self.param_dtype is not None else self.embedding.weight.dtype

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        dtype = self.compute_dtype or self.embedding.compute_dtype
        return dtype if dtype is not None else torch.promote_types(input_dtype, self._param_dtype())

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        self.get_output_shape(x.channel_shape)
        y = self.embedding.attend(x, embedding_dtype=self.param_dtype, compute_dtype=self.compute_dtype)
        if self.bias is None:
            return y
        bias = self.bias
        return y.apply_values(lambda v: v + bias.to(v.dtype))


class OneHot(Stateless):
    """One-hot encodes integer ids: ``[B, T, *C] -> [B, T, *C, depth]`` in ``compute_dtype``.

    Ids outside ``[0, depth)`` give all-zero vectors (as ``jax.nn.one_hot``; no host
    sync, unlike ``torch.nn.functional.one_hot``). Id 0 maps to a non-zero vector, so
    the output is not a MaskedSequence.
    """

    def __init__(self, depth: int, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.depth = check_positive_int(type(self).__name__, "depth", depth)
        if not isinstance(compute_dtype, torch.dtype):
            raise TypeError(f"{type(self).__name__} expected a torch.dtype compute_dtype; got {compute_dtype!r}.")
        self.compute_dtype = compute_dtype

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return (*input_shape, self.depth)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        _check_integer_input(type(self).__name__, input_dtype)
        return self.compute_dtype

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        _check_integer_input(type(self).__name__, x.dtype)
        classes = torch.arange(self.depth, device=x.device)
        return x.apply_values(lambda v: (v.unsqueeze(-1) == classes).to(self.compute_dtype))
