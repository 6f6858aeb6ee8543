#!/usr/bin/env python3
"""Server CPU per forwarded packet, split into userland and kernel (docs/benchmarks.md).

    python3 scripts/cpu_split.py M [SECONDS]

Starts `switchboard serve --dev` (release build), runs `switchboard loadtest` against it with
one 2.5 Mbit/s video publisher and M subscribers, and over a window of SECONDS (default 20)
in the steady state divides the server's utime and stime from /proc by the increase of
switchboard_packets_forwarded_total. The load tester's own report gives only the sum.
"""
import os
import subprocess
import sys
import time
import urllib.request

BIN = os.path.join(os.path.dirname(__file__), '..', 'target', 'release', 'switchboard')
METRICS = 'http://127.0.0.1:7880/metrics'


def cpu_ticks(pid):
    fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def forwarded():
    text = urllib.request.urlopen(METRICS).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('switchboard_packets_forwarded_total'))


def main():
    m = int(sys.argv[1])
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    # Every simulated client comes from 127.0.0.1: lift the per-address bounds meant for one
    # real client (docs/configuration.md, Limits).
    limits = [arg for name in ('http_connections_per_address', 'rtc_requests_per_minute')
              for arg in ('--limit', f'{name}=1000000')]
    server = subprocess.Popen([BIN, 'serve', '--dev', *limits], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        tester = subprocess.Popen(
            [BIN, 'loadtest', '--url', 'ws://127.0.0.1:7880', '--dev', '--rooms', '1', '--video-publishers', '1',
             '--subscribers', str(m), '--preset', 'high', '--duration', f'{int(window) + 6}s', '--quiet'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5 + m / 20)  # joins at 20/s, then media settles
        cpu0, fwd0, t0 = cpu_ticks(server.pid), forwarded(), time.time()
        time.sleep(window)
        cpu1, fwd1, t1 = cpu_ticks(server.pid), forwarded(), time.time()
        tester.wait()
    finally:
        server.terminate()
        server.wait()
    packets = fwd1 - fwd0
    tick = os.sysconf('SC_CLK_TCK')
    user = (cpu1[0] - cpu0[0]) / tick * 1e6 / packets
    kernel = (cpu1[1] - cpu0[1]) / tick * 1e6 / packets
    print(f'M={m}: {packets:.0f} packets ({packets / (t1 - t0):.0f}/s); per forwarded packet '
          f'userland {user:.2f} µs, kernel {kernel:.2f} µs, total {user + kernel:.2f} µs')


if __name__ == '__main__':
    main()
