"""Netboot image delivery: N node namespaces fetch one boot image through kraken agents, or all
from one HTTP server, on links capped at B (default: 20 nodes, 256 MiB, 50 Mbit/s).

DHCP and TFTP carry a few hundred bytes per node (a lease and a 5-line iPXE script: see
tests/integration/test_netboot.py); the time a cluster takes to boot is the time its image takes to
arrive. So this is the swarm benchmark's round with the netboot shape: each node namespace runs the
agent its iPXE script points at (``agent_url``), and the single-server baseline is every node
fetching the image from one server whose link is capped like theirs. It prints the swarm
benchmark's table, then the issue's targets: efficiency (ideal S/B over measured) >= 80 % and
the single server's time >= 5x kraken's.

    sudo .venv/bin/python benchmarks/netboot.py                   # the target run (about 20 min)
    sudo .venv/bin/python benchmarks/netboot.py --nodes 5 --size-mb 32   # a quick look

Needs root (ip netns, tc), as p2p_swarm.py does; all other options are p2p_swarm.py's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rate-mbit", type=int, default=50)
    args, rest = parser.parse_known_args()
    shape = ["--agents", str(args.nodes), "--size-mb", str(args.size_mb), "--rate-mbit", str(args.rate_mbit)]
    command = [sys.executable, str(HERE / "p2p_swarm.py"), *shape, "--mtu", "9000", *rest]
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as swarm:
        assert swarm.stdout is not None
        for line in swarm.stdout:
            sys.stdout.write(line)
            lines.append(line)
    if swarm.returncode != 0:
        return swarm.returncode
    row = lines[-1].split()
    http, kraken, efficiency = float(row[1]), float(row[2]), float(row[5].rstrip("%")) / 100
    print(f"netboot, {args.nodes} nodes: {efficiency:.0%} of ideal (target >= 80 %), "
          f"single server / kraken = {http / kraken:.1f}x (target >= 5x)")  # fmt: skip
    return 0 if efficiency >= 0.8 and http / kraken >= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
