"""Build of the optional C kernels (shardgraph/_kernels.c, shardgraph/_walks.c); everything else is in
pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shardgraph._kernels",
            ["shardgraph/_kernels.c"],
            # -ffast-math lets the compiler vectorise the sum of squares (order of a float sum)
            extra_compile_args=["-O3", "-ffast-math", "-fno-finite-math-only"],
            optional=True,  # no compiler: the same update runs as torch ops
        ),
        Extension(
            "shardgraph._walks",
            ["shardgraph/_walks.c"],
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,  # no compiler: shardgraph/walks/reference.py walks the same walks in Python
        ),
    ]
)
