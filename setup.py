"""Build hook for the optional native relay fast path (everything else is in pyproject.toml).

``visavis.relay._fastpath`` is a small C extension (Linux: recvmmsg); when it cannot be
compiled the install still succeeds and the relay uses its pure-Python fallback.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "visavis.relay._fastpath",
            ["src/visavis/relay/_fastpath.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
