#!/usr/bin/env python3
"""What bandwidth estimation costs: CPU per forwarded packet with estimation on ÷ off.

Runs the load tester (`loadtest --start-server`) in interleaved pairs, off then on, for
each scenario, so that both halves of a pair see the same host; prints each pair's ratio
and the median per scenario. The ratio, not the microseconds, is the result: these
machines are shared and their speed drifts between runs.

    cargo build --release --bin switchboard
    python3 scripts/estimation_cost.py --pairs 8 --scenario S1 --scenario S4
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = {
    "S1": "--rooms 1 --video-publishers 1 --subscribers 100 --preset high",
    "S4": "--rooms 1 --video-publishers 25 --video-with-audio --subscribers 0 --preset low",
}


def run(binary: str, scenario: str, estimation: str, duration: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        subprocess.run(
            [binary, "loadtest", "--start-server", "--server-bandwidth-estimation", estimation,
             "--duration", duration, "--quiet", "--json", str(out), *scenario.split()],
            check=True, stdout=subprocess.DEVNULL,
        )
        report = json.loads(out.read_text())
    server = report["server"]
    return {
        "us": server["cpu_us_per_forwarded_packet"],
        # The server's own work alone: the kernel's sending, two thirds of the whole in S1,
        # is the same with estimation on or off and only adds its noise.
        "user_us": server["user_us_per_forwarded_packet"],
        "lost": report["delivery"]["lost"],
        "floor": report["floor"]["floor_us"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/switchboard")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--json", help="write every run here")
    args = parser.parse_args()
    results = {}
    for name in args.scenario or ["S1", "S4"]:
        pairs = []
        for i in range(args.pairs):
            off = run(args.binary, SCENARIOS[name], "off", args.duration)
            on = run(args.binary, SCENARIOS[name], "on", args.duration)
            ratio = on["us"] / off["us"]
            user_ratio = on["user_us"] / off["user_us"]
            pairs.append({"off": off, "on": on, "ratio": ratio, "user_ratio": user_ratio})
            print(f"{name} pair {i + 1}: off {off['us']:.2f} µs, on {on['us']:.2f} µs, "
                  f"on ÷ off {ratio:.3f}; user alone {off['user_us']:.2f} / {on['user_us']:.2f} µs "
                  f"(lost {off['lost']} / {on['lost']}, "
                  f"floor {off['floor']:.2f} / {on['floor']:.2f} µs)", flush=True)
        for key, what in (("ratio", "on ÷ off"), ("user_ratio", "user time on ÷ off")):
            ratios = sorted(p[key] for p in pairs)
            print(f"{name}: median {what} {statistics.median(ratios):.3f} "
                  f"(range {ratios[0]:.3f}–{ratios[-1]:.3f}, {len(ratios)} pairs)", flush=True)
        # What estimation adds to the whole server, counted in user time alone (the
        # kernel's part is the same on and off): median of (user on − user off) ÷ all off.
        added = sorted((p["on"]["user_us"] - p["off"]["user_us"]) / p["off"]["us"] for p in pairs)
        print(f"{name}: estimation's user time ÷ the whole server off, median "
              f"{statistics.median(added):.3f} (range {added[0]:.3f}–{added[-1]:.3f})", flush=True)
        results[name] = pairs
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
