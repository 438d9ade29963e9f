"""Errors of data-parallel training. Both subclass ev.ExprError."""
from ..errors import ExprError


class DistributedError(ExprError):
    """ev.distributed cannot run: mpi4py or MPI is missing, or the ranks disagree."""


class ParamMismatchError(DistributedError):
    """The ranks' parameters differ in names, shapes or dtypes (raised on every rank)."""
