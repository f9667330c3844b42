"""Build of the optional C kernels (shardgraph/_kernels.c, _walks.c, _sampler.c); everything else is in
pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shardgraph._kernels",
            ["shardgraph/_kernels.c"],
            # reassociation lets the compiler vectorise the sum of squares (the order of a float sum).
            # Not -ffast-math: linking a shared object with it sets flush-to-zero for the whole
            # process that loads it (crtfastmath), changing torch's and numpy's arithmetic too.
            # -Wno-psabi: the 8-float vector helpers are static, their calling convention never leaves the file
            extra_compile_args=["-O3", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math", "-Wno-psabi"],
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
