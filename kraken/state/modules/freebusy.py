"""Free/busy fencing, performed by the node itself (SELF): a node marked BUSY is someone
else's for now. It is the simplest module that runs on a child, which makes it the one the
parent/child sync tests drive."""

from __future__ import annotations

from kraken.state.model import Node
from kraken.state.modules.base import Context, Module, Mutation, declare


class FreeBusy(Module):
    si = "freebusy"
    module_url = "kraken.state.modules.freebusy"

    def declare_mutations(self) -> list[Mutation]:
        timeout = float(self.config.get("timeout", 10.0))
        req = {"/RunState": "SYNC"}
        return [
            declare(
                self.si, "FREEtoBUSY", {"/Busy": ("FREE", "BUSY")}, req, context=Context.SELF, timeout=timeout
            ),
            declare(
                self.si, "BUSYtoFREE", {"/Busy": ("BUSY", "FREE")}, req, context=Context.SELF, timeout=timeout
            ),
        ]

    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        assert self.api is not None
        self.api.discover(self.si, cfg.id, "/Busy", "BUSY" if mutation.id == "FREEtoBUSY" else "FREE")
