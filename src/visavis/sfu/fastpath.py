"""The SFU's per-packet path: native (``_fastpath.c``, OpenSSL) or its pure-Python twin.

``VISAVIS_SFU_PURE_PYTHON=1`` forces the twin (also used when the extension was not
built). Both expose the same names; see :mod:`visavis.sfu._fastpath_py` for what each
does and ``docs/sfu.md`` ("Native forwarding") for the division of work with Python.
The choice is made once, at import: :mod:`visavis.sfu.room` derives its ``Layer`` and
``Consumer`` classes from ``Source`` and ``Sink``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visavis.sfu import _fastpath_py as fp
else:
    fp: Any
    if os.environ.get("VISAVIS_SFU_PURE_PYTHON"):
        from visavis.sfu import _fastpath_py as fp
    else:
        try:
            from visavis.sfu import _fastpath as fp
        except ImportError:  # not compiled (or libssl-dev missing): the pure-Python twin
            from visavis.sfu import _fastpath_py as fp

NATIVE = bool(fp.NATIVE)
Forwarder = fp.Forwarder
Link = fp.Link
Rewriter = fp.Rewriter
Selector = fp.Selector
Session = fp.Session
Sink = fp.Sink
Source = fp.Source
SrtpError = fp.SrtpError
PROFILE_AES128_CM_SHA1_80 = fp.PROFILE_AES128_CM_SHA1_80
PROFILE_AEAD_AES_128_GCM = fp.PROFILE_AEAD_AES_128_GCM
link_key = fp.link_key
