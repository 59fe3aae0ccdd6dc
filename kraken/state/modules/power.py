"""The mutations every power module declares, gated on the node's ``/Platform``."""

from __future__ import annotations

from kraken.state.modules.base import Context, Mutation, declare

PHYS = "/PhysState"
HANG = (PHYS, "PHYS_HANG")


def power_mutations(
    si: str, platform: str, timeout: float = 10.0, hang_timeout: float = 20.0
) -> list[Mutation]:
    """UKtoOFF (discover the power state), OFFtoON, ONtoOFF, HANGtoOFF; CHILD context."""
    req = {"/Platform": platform}

    def mk(mid: str, a: str, b: str, t: float) -> Mutation:
        return declare(si, mid, {PHYS: (a, b)}, requires=req, context=Context.CHILD, timeout=t, fail_to=HANG)

    return [
        mk("UKtoOFF", "PHYS_UNKNOWN", "POWER_OFF", timeout),
        mk("OFFtoON", "POWER_OFF", "POWER_ON", timeout),
        mk("ONtoOFF", "POWER_ON", "POWER_OFF", timeout),
        mk("HANGtoOFF", "PHYS_HANG", "POWER_OFF", hang_timeout),
    ]
