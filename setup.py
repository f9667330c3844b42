"""Build of the optional C kernels (shardgraph/_kernels.c, _walks.c, _sampler.c); everything else is in
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
        Extension(
            "shardgraph._sampler",
            ["shardgraph/_sampler.c"],
            extra_compile_args=["-O3", "-fopenmp"],
            extra_link_args=["-fopenmp"],
            optional=True,  # no compiler or no OpenMP: the GraphSAGE sampler runs as numpy ops
        ),
    ]
)
