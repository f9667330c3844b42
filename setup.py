"""Build of the optional C kernel (shardgraph/_kernels.c); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shardgraph._kernels",
            ["shardgraph/_kernels.c"],
            # -ffast-math lets the compiler vectorise the sum of squares (order of a float sum)
            extra_compile_args=["-O3", "-ffast-math", "-fno-finite-math-only"],
            optional=True,  # no compiler: the same update runs as torch ops
        )
    ]
)
