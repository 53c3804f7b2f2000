"""Parsing turnutils_uclient output."""

from __future__ import annotations

import re


def uclient_totals(output: str) -> tuple[int, int, int]:
    """(sent, received, lost) from turnutils_uclient's summary lines."""
    sent = recv = -1
    for m in re.finditer(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", output, re.M):
        sent, recv = int(m.group(1)), int(m.group(2))
    lost_m = re.search(r"Total lost packets (\d+)", output)
    lost = int(lost_m.group(1)) if lost_m else -1
    return sent, recv, lost
