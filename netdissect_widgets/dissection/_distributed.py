"""The processes that share one dissection under ``torchrun``, and the collectives they need.

When ``torch.distributed`` is initialised (``torchrun``, or ``init_process_group``
yourself), every rank calls :func:`~netdissect_widgets.dissect` with the same
arguments; :class:`Group` tells each rank which batches of the data are its own
and combines the ranks' partial statistics with torch's collectives (gloo on
the CPU, NCCL on GPUs). Without a process group, :class:`Group` is one process and
every collective returns its input.

Every collective is a tensor collective (``all_reduce``, ``all_gather`` of padded
tensors, ``broadcast``): nothing is pickled. A collective that fails (another rank
died, or the process group's ``timeout`` passed while waiting for a rank) raises a
``RuntimeError`` saying so on the ranks still alive.

>>> g = Group(); (g.rank, g.world)   # no process group: one process
(0, 1)
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Group", "is_initialized"]


def is_initialized() -> bool:
    """True when a ``torch.distributed`` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


class Group:
    """This process's place among the processes of one dissection (rank 0 of 1 without a process group).

    Attributes
    ----------
    rank, world : int
        This process's rank and the number of processes.
    device : torch.device
        Where the collectives' tensors must be: the current CUDA device for NCCL, else the CPU.
    """

    def __init__(self) -> None:
        self.active = is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        nccl = self.active and dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    # ------------------------------------------------------------------ sharding
    def batch_span(self, n_batches: int) -> tuple[int, int]:
        """This rank's batches ``[first, stop)`` of ``n_batches``: contiguous, as even as can be
        (a rank may get one more than another, or none when there are fewer batches than ranks).

        Whole batches, so that every image goes through the model in the same batch as in a
        one-process run (a layer's float results may depend on the batch it is computed in).
        """
        return n_batches * self.rank // self.world, n_batches * (self.rank + 1) // self.world

    # ------------------------------------------------------------------ collectives
    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as err:  # (gloo and NCCL errors are RuntimeErrors, DistBackendError included)
            raise RuntimeError(
                f"dissect on rank {self.rank} of {self.world}: combining {what} across ranks failed: another rank "
                f"has probably died or stopped (or took longer than the process group's timeout, "
                f"init_process_group(timeout=...)); nothing was written to the cache. Cause: {err}"
            ) from err

    def _in_place(self, t: torch.Tensor, collective, what: str) -> torch.Tensor:
        """``collective(buffer)`` on a copy of ``t`` on the collectives' device; the result on ``t``'s device."""
        if not self.active:
            return t
        buf = t.to(self.device).contiguous().clone()
        with self._collective(what):
            collective(buf)
        return buf.to(t.device)

    def _reduce(self, t: torch.Tensor, op, what: str) -> torch.Tensor:
        return self._in_place(t, lambda buf: dist.all_reduce(buf, op=op), what)

    def sum(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Elementwise sum over ranks (exact for integers)."""
        return self._reduce(t, dist.ReduceOp.SUM, what)

    def max(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Elementwise maximum over ranks."""
        return self._reduce(t, dist.ReduceOp.MAX, what)

    def min(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Elementwise minimum over ranks."""
        return self._reduce(t, dist.ReduceOp.MIN, what)

    def gather(self, t: torch.Tensor, what: str) -> list[torch.Tensor]:
        """Every rank's ``t`` (same dtype and trailing shape, any number of rows), in rank order.

        Two collectives: the row counts, then the tensors padded to the longest.
        """
        if not self.active:
            return [t]
        rows = self.each(t.shape[0], what)
        pad = torch.zeros((int(rows.max()), *t.shape[1:]), dtype=t.dtype, device=self.device)
        pad[: t.shape[0]] = t.to(self.device)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        with self._collective(what):
            dist.all_gather(parts, pad)
        return [p[:n].to(t.device) for p, n in zip(parts, rows.tolist())]

    def each(self, n: int, what: str) -> np.ndarray:
        """Every rank's ``n``, in rank order (an ``all_reduce`` of one-hot counts)."""
        counts = torch.zeros(self.world, dtype=torch.int64)
        counts[self.rank] = n
        return self.sum(counts, what).numpy()

    def broadcast(self, t: torch.Tensor, src: int, what: str) -> torch.Tensor:
        """Rank ``src``'s ``t`` on every rank (``t`` gives the shape and dtype on the others)."""
        return self._in_place(t, lambda buf: dist.broadcast(buf, src=src), what)

    def agree(self, key: str, what: str) -> None:
        """Raise a ``ValueError`` on every rank unless all ranks passed the same ``key``."""
        if not self.active:
            return
        h = torch.tensor([int(key[:15], 16)], dtype=torch.int64)
        if int(self.max(h, what)) != int(self.min(h, what)):
            raise ValueError(
                f"dissect on rank {self.rank} of {self.world}: the ranks were called with different inputs "
                f"({what} differ): under torchrun every rank must call dissect with the same model weights, "
                f"layer, dataset and settings (each reads its own shard of the data itself)"
            )
