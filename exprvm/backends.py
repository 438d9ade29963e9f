"""Adapter between the compiler and exprvm.kernels (compiled elementwise kernels).

resolve(name) returns an object with lower(op, in_regs, in_layouts, out_reg, params)
-> Lowered or None, or None when only numpy is to be used.
"""


def resolve(name):
    return None
