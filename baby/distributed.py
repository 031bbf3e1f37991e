"""Data parallelism: one communicator per process, behind the backend.

``world()`` gives the communicator of this process: a no-op one when it was not launched by an MPI
launcher (no MPI is imported then), an MPI one (mpi4py) for NumPy arrays, and, on the GPU, an NCCL
one (CuPy's ``cupy.cuda.nccl``, reached only through ``backend``) bootstrapped over MPI. Each rank
computes forward/backward on its shard of every global batch; ``train_step`` averages the flat
gradient once per step with ``all_reduce_mean``, so clipping and AdamW run identically everywhere.

A collective that does not complete within ``BABY_COMM_TIMEOUT`` seconds (default 600) raises
CommError on the MPI path: a dead or stalled rank then stops the others with one line instead of a
hang (MPI cannot cancel a pending collective, so the caller aborts the job).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy

from baby import backend
from baby.config import ConfigError

# Set by every MPI launcher we know (Open MPI, MPICH/Hydra, Intel MPI, PMIx, SLURM's srun --mpi=pmi2/pmix).
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
WORLD_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
RANK_VARIABLES = (*WORLD_RANK_VARIABLES, "MPI_LOCALNRANKS")
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")
MPI_HELP = ("install MPI for Python with `pip install -e .[mpi]` (mpi4py and the MPICH wheel); on a "
            "cluster build mpi4py against the cluster's MPI: `pip install --no-binary=mpi4py mpi4py`")
DEFAULT_TIMEOUT = 600.0


class CommError(RuntimeError):
    """MPI is missing or broken, or a collective timed out (a rank died or stalled)."""


def timeout_seconds() -> float:
    """Deadline of one collective, from BABY_COMM_TIMEOUT (tests set a few seconds)."""
    raw = os.environ.get("BABY_COMM_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise CommError(f"BABY_COMM_TIMEOUT={raw!r}: must be a number of seconds") from None
    if not value > 0:
        raise CommError(f"BABY_COMM_TIMEOUT={raw!r}: must be > 0")
    return value


def launched_size() -> int | None:
    """World size announced by an MPI launcher, 0 when one launched us without saying, None when none did."""
    for name in SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0 if any(name in os.environ for name in RANK_VARIABLES) else None


def launched_rank() -> int:
    """This process's rank as its MPI launcher announced it (0 when none did): who speaks for the job."""
    for name in WORLD_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def local_rank() -> int:
    """Index of this rank among the ranks of its machine (selects its GPU)."""
    for name in LOCAL_RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class Communicator:
    """One process alone: every collective is the identity."""

    rank = 0
    size = 1
    kind = "single"

    def all_reduce_mean(self, array: Any) -> None:
        """Replace ``array`` (in place) by its mean over the ranks."""

    def barrier(self) -> None:
        """Wait until every rank is here."""

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (a small JSON-serialisable object: a GUID, NCCL's id) on every rank."""
        return value

    def abort(self, status: int) -> None:
        """Stop every rank of the job now (a pending collective cannot be left otherwise)."""
        os._exit(status)


class MPICommunicator(Communicator):
    """MPI over mpi4py for NumPy arrays: non-blocking collectives polled against a deadline."""

    kind = "mpi"

    def __init__(self, comm: Any, timeout: float) -> None:
        self.comm, self.timeout = comm, timeout
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def wait(self, request: Any, what: str) -> None:
        """Poll a request until done or past the deadline; short sleeps leave the core to the others."""
        deadline, pause = time.monotonic() + self.timeout, 1e-5
        while not request.Test():
            if time.monotonic() > deadline:
                raise CommError(f"rank {self.rank} of {self.size}: no answer from the other ranks in {what} "
                                f"within {self.timeout:g} s (a rank died or stalled; BABY_COMM_TIMEOUT sets the limit)")
            time.sleep(pause)
            pause = min(pause * 2, 2e-3)

    def all_reduce_mean(self, array: Any) -> None:
        from mpi4py import MPI  # noqa: PLC0415 - imported only when launched under MPI

        # MPI has no half type: reduce fp16 in fp32 (the sum of N halves may overflow fp16 anyway)
        buffer = array if array.dtype != numpy.float16 else array.astype(numpy.float32)
        self.wait(self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), "all-reduce")
        buffer *= 1.0 / self.size
        if buffer is not array:
            array[...] = buffer

    def barrier(self) -> None:
        self.wait(self.comm.Ibarrier(), "barrier")

    def broadcast(self, value: Any) -> Any:
        # a small object as JSON (nothing is ever unpickled): its byte count, then its bytes, non-blocking
        data = numpy.frombuffer(json.dumps(value).encode("utf-8"), dtype=numpy.uint8) if self.rank == 0 else None
        count = numpy.array([len(data) if data is not None else 0], dtype=numpy.int64)
        self.wait(self.comm.Ibcast(count, root=0), "broadcast")
        buffer = data.copy() if data is not None else numpy.empty(int(count[0]), dtype=numpy.uint8)
        self.wait(self.comm.Ibcast(buffer, root=0), "broadcast")
        return json.loads(buffer.tobytes().decode("utf-8"))

    def abort(self, status: int) -> None:
        self.comm.Abort(status)


class NCCLCommunicator(Communicator):
    """NCCL over CuPy for device arrays; MPI (when there is more than one rank) only hands out the id.

    NCCL runs on the stream without a host sync, so no deadline is polled here: a dead rank is
    noticed by the MPI launcher (or NCCL_TIMEOUT-style watchdogs of the cluster)."""

    kind = "nccl"

    def __init__(self, rank: int = 0, size: int = 1, bootstrap: Communicator | None = None) -> None:
        nccl = backend.nccl()
        self.rank, self.size, self.bootstrap = rank, size, bootstrap or Communicator()
        uid = nccl.get_unique_id() if rank == 0 else None
        uid = tuple(self.bootstrap.broadcast(list(uid) if uid is not None else None)) if size > 1 else uid
        self.nccl = nccl
        self.comm = nccl.NcclCommunicator(size, uid, rank)

    def all_reduce_mean(self, array: Any) -> None:
        nccl = self.nccl
        types = {numpy.dtype(numpy.float16): nccl.NCCL_FLOAT16, numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32,
                 numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64}
        stream = backend.xp.cuda.get_current_stream().ptr
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, types[numpy.dtype(array.dtype)],
                            nccl.NCCL_SUM, stream)
        array *= 1.0 / self.size

    def barrier(self) -> None:
        self.bootstrap.barrier()

    def broadcast(self, value: Any) -> Any:
        return self.bootstrap.broadcast(value)

    def abort(self, status: int) -> None:
        self.comm.abort()
        self.bootstrap.abort(status)


_WORLD: dict[str, Communicator] = {}


def mpi_world() -> Communicator:
    """The MPI communicator of the job, or the single-process one when no launcher started us."""
    if "mpi" in _WORLD:
        return _WORLD["mpi"]
    size = launched_size()
    if size is None or size == 1:
        comm: Communicator = Communicator()
    else:
        try:
            from mpi4py import MPI  # noqa: PLC0415 - only under an MPI launcher
        except ImportError as err:
            raise CommError(f"launched on {size or 'several'} MPI ranks but mpi4py is missing ({err}): {MPI_HELP}") from None
        except RuntimeError as err:  # mpi4py without a loadable libmpi
            raise CommError(f"mpi4py cannot load an MPI library ({' '.join(str(err).split())}): {MPI_HELP}") from None
        comm = MPICommunicator(MPI.COMM_WORLD, timeout_seconds())
        if size and comm.size != size:
            raise CommError(f"the launcher started {size} ranks but mpi4py sees {comm.size}: mpi4py uses another "
                            f"MPI than the launcher (use the mpiexec of the MPI that mpi4py loads); {MPI_HELP}")
    _WORLD["mpi"] = comm
    return comm


def world() -> Communicator:
    """The communicator for the current backend: MPI for NumPy, NCCL for CuPy (more than one rank)."""
    comm = mpi_world()
    if comm.size == 1 or backend.xp is numpy:
        return comm
    if "nccl" not in _WORLD:
        _WORLD["nccl"] = NCCLCommunicator(comm.rank, comm.size, comm)
    return _WORLD["nccl"]


def check_split(batch_size: int, size: int) -> None:
    """Every rank trains the same number of rows, so the mean of the shard means is the batch mean."""
    if batch_size % size:
        fits = [n for n in range(1, batch_size + 1) if batch_size % n == 0]
        raise ConfigError(f"batch_size={batch_size} cannot be split evenly over {size} ranks: launch a number of "
                          f"ranks that divides it ({', '.join(map(str, fits))}) or change batch_size")


def current_rank() -> int:
    """This process's rank once a communicator was made (0 before, and without MPI)."""
    return _WORLD["mpi"].rank if "mpi" in _WORLD else 0


_PARTED = {"possible": False}  # set once ranks may fail apart (rank 0 alone writes files)


def ranks_may_part() -> None:
    """From here on an error may strike one rank alone (a full disk on rank 0): ``abort_on_error``
    then stops the job instead of leaving the others in a collective until the timeout."""
    _PARTED["possible"] = True


def abort_on_error(status: int) -> None:
    """A user error: stop the other ranks only when they may be waiting (before that point every rank
    validated the same input and fails alike, and an abort would only add MPI's noise)."""
    if _PARTED["possible"]:
        abort_job(status)


def abort_job(status: int) -> None:
    """After a failed collective: stop every rank (MPI_Abort), since none can leave it otherwise."""
    comm = _WORLD.get("nccl") or _WORLD.get("mpi")
    if comm is not None and comm.size > 1:
        comm.abort(status)
