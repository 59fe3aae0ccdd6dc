"""One example line for every ``kraken`` command, shown at the end of its ``--help``."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES: dict[str, str] = {
    "kraken": "bash scripts/cluster.sh    # then, in another terminal:  kraken doctor",
    "kraken certs": "kraken certs dev run/pki",
    "kraken certs init": "kraken certs init run/pki",
    "kraken certs issue": "kraken certs issue run/pki alice --role client --host 127.0.0.1",
    "kraken certs dev": "kraken certs dev run/pki",
    "kraken pubsub": "kraken pubsub publish news hello",
    "kraken pubsub publish": "kraken pubsub publish news hello 'second message'",
    "kraken pubsub subscribe": "kraken pubsub subscribe news --since 60 --follow --json",
    "kraken pubsub status": "kraken pubsub status",
    "kraken pubsub dump-topics": "kraken pubsub dump-topics",
    "kraken pubsub dump-queues": "kraken pubsub dump-queues",
    "kraken pubsub dump-queue-topics": "kraken pubsub dump-queue-topics 3",
    "kraken pubsub log-level": "kraken pubsub log-level debug",
    "kraken blob": 'digest=$(kraken blob push some.bin) && kraken blob pull "$digest" -o copy.bin',
    "kraken blob push": "kraken blob push some.bin",
    "kraken blob pull": "kraken blob pull sha256:<hex> -o copy.bin",
    "kraken registry": "kraken registry demo-image demo --tag v1",
    "kraken registry demo-image": "kraken registry demo-image demo --tag v1",
    "kraken state": "kraken state nodes",
    "kraken state nodes": "kraken state nodes --json",
    "kraken state get": "kraken state get kraken",
    "kraken state set": "kraken state set kraken physState=POWER_ON",
    "kraken state graph": "kraken state graph --dot | dot -Tsvg > graph.svg",
    "kraken state freeze": "kraken state freeze",
    "kraken state thaw": "kraken state thaw",
    "kraken state console": "kraken state console node17    # ~. at line start quits",
    "kraken pipeline": "kraken pipeline call '{\"type\": \"hello\", \"name\": \"Anton\"}'",
    "kraken pipeline services": "kraken pipeline services call simple-math add '{\"a\": 1, \"b\": 2}'",
    "kraken pipeline pipelines": "kraken pipeline pipelines list",
    "kraken pipeline routes": "kraken pipeline routes",
    "kraken pipeline call": "kraken pipeline call '{\"type\": \"hello\", \"name\": \"Anton\"}'",
    "kraken pipeline cast": "kraken pipeline cast '{\"type\": \"hello\", \"name\": \"Anton\"}'",
    "kraken pipeline stream": "kraken pipeline stream @events.json",
    "kraken pipeline apply": "kraken pipeline apply etc/pipeline-project",
    "kraken cluster": "kraken cluster up",
    "kraken cluster up": "kraken cluster up --only pubsub --only state",
    "kraken doctor": "kraken doctor",
    "kraken queues": "kraken queues run/origin/store/journal.sqlite",
    "kraken containerd": "kraken containerd hosts /etc/containerd/certs.d --mirror http://127.0.0.1:5055",
    "kraken containerd hosts": (
        "kraken containerd hosts /etc/containerd/certs.d --mirror http://127.0.0.1:5055 --registry docker.io"
    ),
}


class ExampleParser(argparse.ArgumentParser):
    """An ArgumentParser whose help ends with the command's example line (when it has no
    epilog of its own); sub-command parsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        example = EXAMPLES.get(self.prog)
        if self.epilog is None and example is not None:
            self.epilog = f"example:\n  {example}"
