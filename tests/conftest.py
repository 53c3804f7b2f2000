"""Fixtures shared by the whole suite: services on loopback port 0, real clients."""

from __future__ import annotations

import logging

logging.getLogger("alembic").setLevel(logging.WARNING)
