"""Build hook for the optional native fast paths (everything else is in pyproject.toml).

``visavis.relay._fastpath`` (Linux: recvmmsg) and ``visavis.sfu._fastpath`` (Linux:
recvmmsg/sendmmsg, SRTP of its own on OpenSSL's libcrypto, ``libssl-dev``) are small C
extensions; when one cannot be compiled the install still succeeds and that server uses
its pure-Python twin.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "visavis.relay._fastpath",
            ["src/visavis/relay/_fastpath.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "visavis.sfu._fastpath",
            ["src/visavis/sfu/_fastpath.c", "src/visavis/sfu/_srtp.c"],
            depends=["src/visavis/sfu/_srtp.h"],
            extra_compile_args=["-O2", "-Wall", "-Wno-missing-braces"],
            libraries=["crypto"],
            optional=True,
        ),
    ]
)
