"""Data-parallel training of the speech-enhancement model with DistributedDataParallel.

sl layers are plain ``torch.nn.Module``s whose ``forward`` is ``layer(x)`` in the module's
training mode, so DDP wraps them as it wraps any model: every process trains on its
share of the global batch and DDP averages the gradients. With lazy input sizes
(``sl.Dense(features=...)``), run one batch (or ``model.get_output_spec``) before wrapping
the model and building the optimizer, so every parameter exists.

FSDP works the same way: wrap the model (or each ``Residual`` block, with an
``auto_wrap_policy`` on the block class) in ``torch.distributed.fsdp.FullyShardedDataParallel``
after its parameters are materialised; ``step()`` for streaming runs on the unwrapped
module (``fsdp_model.module``) after gathering the full parameters
(``FullyShardedDataParallel.summon_full_params``), since a live stream runs on one device.

    python examples/ddp_training.py     # 2 CPU processes on gloo
"""

from __future__ import annotations

import os

import speech_enhancement as se
import torch
import torch.distributed as dist

import sl

STEPS, GLOBAL_BATCH, SECONDS = 3, 4, 0.25


def global_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [se.synthesize(GLOBAL_BATCH, SECONDS, gen) for _ in range(STEPS)]


def build(seed: int = 0) -> sl.SequenceLayer:
    torch.manual_seed(seed)
    return se.build_model(channels=8, hidden=8)


def _loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    y = model(sl.Sequence.from_values(noisy))
    return (y.values - clean[:, : y.values.shape[1]]).pow(2)[y.mask].mean()


def train_single(seed: int = 0) -> dict[str, torch.Tensor]:
    """One process, the whole global batch per step."""
    model = build(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for noisy, clean in global_batches(seed):
        loss = _loss(model, noisy, clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_worker(rank: int, world: int, port: int, out_path: str, seed: int = 0) -> None:
    """One DDP process: its slice of each global batch; rank 0 saves the trained parameters."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = torch.nn.parallel.DistributedDataParallel(build(seed))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    share = GLOBAL_BATCH // world
    for noisy, clean in global_batches(seed):
        part = slice(rank * share, (rank + 1) * share)
        loss = _loss(model, noisy[part], clean[part])
        opt.zero_grad()
        loss.backward()  # DDP averages the gradients across processes
        opt.step()
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()}, out_path)
    dist.destroy_process_group()


def train_ddp(world: int = 2, port: int = 29517, out_path: str = "ddp_params.pt") -> dict[str, torch.Tensor]:
    torch.multiprocessing.spawn(train_worker, args=(world, port, out_path), nprocs=world, join=True)
    return torch.load(out_path, weights_only=True)  # type: ignore[no-any-return]


def main() -> None:
    single = train_single()
    distributed = train_ddp()
    worst = max(float((single[k] - distributed[k]).abs().max()) for k in single)
    print(f"DDP (2 processes) vs one process on the same global batch: max parameter difference {worst:.2e}")


if __name__ == "__main__":
    main()
