"""CompileOptions: everything that steers one compile, in one record."""
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class CompileOptions:
    """How to compile a graph (TapeMachine's keyword arguments of the same names).

    grads       also compile the ev.grad gradients of the costs compiled
    keep        extra nodes whose values must survive the run (watches)
    backend     host kernel backend: "numpy", "c", or None for exprvm.kernels' default
    optimize    fold identities, batch per-step ops, merge summed gradients, fuse
    fuse        run each group of elementwise ops over one shape as one generated C kernel
                (compiler/fusion.py; on the C backend when a C compiler is available; off
                under nan/inf watches, so that a NaN is reported at the op that made it):
                True or "tiered" (default: a program whose kernels are not built yet runs
                unfused while they build in the background, compiler/tiers.py), "sync"
                (build them before returning) or False
    threads     the thread policy: None (chosen from the shapes, compiler/threads.py), an int
                (at most that many threads), or a threads.Policy
    verify      prove the buffer plan sound with Program.verify
    device      None / "cpu", or "cuda": every instruction with a CUDA kernel on the GPU
    use_cuda_for  only these ops on the GPU
    comm        an ev.distributed Context: average the gradients over its ranks (allreduce.py)
    updates     ((state leaf, new value node), ...): at the end of every run the new
                value is written into the state parameter's array (Theano's updates)
    inputs      a loop body's inputs (compiler/control.py): nodes read as inputs, op
                nodes among them too (a gradient body's residuals); the Program's
                .inputs gives each one's register
    external    a loop body's outputs are written into memory the loop provides each
                iteration (registers of kind "external"; the Program's .externals): True,
                or the (i, j) pairs of output positions that may share one register
                (a carry kept in the rows of its stacked y); False: an ordinary program
    """
    grads: bool = True
    keep: tuple = ()
    backend: Optional[str] = None
    optimize: bool = True
    fuse: object = True
    threads: object = None
    verify: bool = True
    device: Optional[str] = None
    use_cuda_for: tuple = ()
    comm: object = None
    updates: tuple = ()
    inputs: tuple = ()
    external: object = False

    def with_(self, **changes):
        """A copy with some fields changed."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        return CompileOptions(**fields)
