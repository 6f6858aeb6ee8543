#!/usr/bin/env python3
"""Soak: does the server give back what churn takes? (docs/benchmarks.md, "Soak")

    python3 scripts/soak.py [--minutes 10] [--warmup 2] [--bin target/release/switchboard]
                            [--json soak.json]

Starts `switchboard serve --dev` on its own ports and data directory, then until the time is
up repeats one cycle:

  1. `switchboard loadtest` against it: LiveKit-protocol clients (WebSocket signaling, ICE,
     DTLS, SRTP) join two rooms, publish VP8 and Opus, receive each other, and leave;
  2. WHIP and WHEP resources created and deleted over HTTP (offers with real m-lines; the
     peers never connect, so each resource is created, answered and ended by DELETE);
  3. the server's RSS, open file descriptors and threads are read from /proc once the cycle
     has left nothing behind (participants gauge back at 0).

At the end it fits a line to RSS over the samples after the warm-up and prints its slope
(KiB per minute and per cycle), the first and last counts of descriptors and threads, and
exits non-zero if descriptors or threads (other than the database pool's, which grows up to
its bound of 8 connections as concurrency needs them) grew after the warm-up, or RSS kept
growing by more than 1 % of its post-warm-up level per ten minutes.
"""
import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def proc_status(pid):
    """RSS, threads and descriptors, with the SQLite pool's share apart: sqlx runs each
    pooled connection on a thread of its own holding the database and its WAL open, and the
    pool opens connections (up to 8, src/store/sqlite/mod.rs) as concurrency first needs
    them, which is growth up to a bound, not a leak."""
    fields = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            key, _, value = line.partition(':')
            fields[key] = value.strip()
    names = []
    for task in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{task}/comm') as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass  # the thread ended while we looked
    targets = []
    for fd in os.listdir(f'/proc/{pid}/fd'):
        try:
            targets.append(os.readlink(f'/proc/{pid}/fd/{fd}'))
        except FileNotFoundError:
            pass
    pool = sum(1 for n in names if n.startswith('sqlx-sqlite'))
    pool_fds = sum(1 for t in targets if t.endswith('.db') or t.endswith('.db-wal'))
    return {
        'rss_kib': int(fields['VmRSS'].split()[0]),
        'threads': int(fields['Threads']),
        'fds': len(targets),
        'db_connections': pool,
        'threads_other': len(names) - pool,
        'fds_other': len(targets) - pool_fds,
    }


def metric(base, name):
    text = urllib.request.urlopen(f'{base}/metrics', timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + ' ')
               or line.startswith(name + '{'))


def token(binary, room, identity):
    out = subprocess.run([binary, 'token', 'create', '--dev', '--room', room, '--identity', identity],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def offer(direction):
    """An offer with one Opus and one VP8 m-line, as a WHIP encoder (sendonly) or a WHEP
    player (recvonly) sends it. Its ICE credentials and fingerprint are random: the peer
    never connects."""
    ufrag = secrets.token_hex(4)
    pwd = secrets.token_hex(12)
    fingerprint = ':'.join(f'{b:02X}' for b in secrets.token_bytes(32))
    session = [
        'v=0', f'o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1', 's=-', 't=0 0',
        'a=group:BUNDLE 0 1', 'a=msid-semantic: WMS soak',
    ]
    common = [
        'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0', f'a=ice-ufrag:{ufrag}', f'a=ice-pwd:{pwd}',
        'a=ice-options:trickle', f'a=fingerprint:sha-256 {fingerprint}', 'a=setup:actpass',
    ]
    audio = ['m=audio 9 UDP/TLS/RTP/SAVPF 111', *common, 'a=mid:0', f'a={direction}',
             'a=rtcp-mux', 'a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1']
    video = ['m=video 9 UDP/TLS/RTP/SAVPF 96', *common, 'a=mid:1', f'a={direction}',
             'a=rtcp-mux', 'a=rtcp-rsize', 'a=rtpmap:96 VP8/90000', 'a=rtcp-fb:96 nack',
             'a=rtcp-fb:96 nack pli']
    if direction == 'sendonly':
        audio += ['a=msid:soak a0', f'a=ssrc:{secrets.randbits(31)} cname:soak']
        video += ['a=msid:soak v0', f'a=ssrc:{secrets.randbits(31)} cname:soak']
    return '\r\n'.join(session + audio + video) + '\r\n'


def http(method, url, bearer, body=None, content_type=None):
    request = urllib.request.Request(url, method=method, data=body.encode() if body else None)
    request.add_header('Authorization', f'Bearer {bearer}')
    if content_type:
        request.add_header('Content-Type', content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def whip_whep_cycle(binary, base, room, count):
    """Creates and deletes `count` WHIP publishers and WHEP players; returns how many of
    each step succeeded."""
    done = {'whip_created': 0, 'whep_created': 0, 'deleted': 0}
    publisher = token(binary, room, f'whip-{secrets.token_hex(3)}')
    viewer = token(binary, room, f'whep-{secrets.token_hex(3)}')
    for _ in range(count):
        status, headers, text = http('POST', f'{base}/whip', publisher, offer('sendonly'), 'application/sdp')
        if status != 201:
            raise RuntimeError(f'WHIP POST answered {status}: {text[:300]}')
        done['whip_created'] += 1
        whip = headers.get('Location') or headers['location']
        status, headers, text = http('POST', f'{base}/whep', viewer, offer('recvonly'), 'application/sdp')
        if status != 201:
            raise RuntimeError(f'WHEP POST answered {status}: {text[:300]}')
        done['whep_created'] += 1
        whep = headers.get('Location') or headers['location']
        for location, bearer in ((whep, viewer), (whip, publisher)):
            url = location if location.startswith('http') else base + location
            status, _, text = http('DELETE', url, bearer)
            if status not in (200, 204):
                raise RuntimeError(f'DELETE {location} answered {status}: {text[:300]}')
            done['deleted'] += 1
    return done


def wait_empty(base, deadline_s=30):
    """Waits until the server counts no participants: the cycle left nothing behind."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if metric(base, 'switchboard_participants') == 0 and metric(base, 'switchboard_media_participants') == 0:
            return True
        time.sleep(0.2)
    return False


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--minutes', type=float, default=10)
    ap.add_argument('--warmup', type=float, default=2, help='minutes left out of the RSS fit')
    ap.add_argument('--bin', default=os.path.join(ROOT, 'target', 'release', 'switchboard'))
    ap.add_argument('--whip-per-cycle', type=int, default=5)
    ap.add_argument('--database-url', help='instead of the SQLite file in the data directory')
    ap.add_argument('--json')
    args = ap.parse_args()

    http_port, rtc_port = free_port(), free_port(socket.SOCK_DGRAM)
    data = tempfile.mkdtemp(prefix='switchboard-soak-')
    base = f'http://127.0.0.1:{http_port}'
    server = subprocess.Popen(
        [args.bin, 'serve', '--dev', '--http-addr', f'127.0.0.1:{http_port}', '--rtc-port', str(rtc_port), '--rtc-tcp-port', '0',
         '--rtc-workers', '1', '--data-dir', data, '--empty-timeout', '1', '--log', 'warn',
         # Every client of the soak comes from 127.0.0.1; the per-address request rates meant
         # for one real client would refuse its churn.
         '--limit', 'rtc_requests_per_minute=1000000', '--limit', 'whip_requests_per_minute=1000000',
         '--limit', 'api_requests_per_minute=1000000',
         *(['--database-url', args.database_url] if args.database_url else [])],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, 'server.log'), 'w'))
    samples = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f'{base}/healthz', timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        baseline = proc_status(server.pid)
        started = time.monotonic()
        cycle = 0
        while time.monotonic() - started < args.minutes * 60:
            cycle += 1
            room = f'soak-{cycle % 4}'
            subprocess.run(
                [args.bin, 'loadtest', '--url', f'ws://127.0.0.1:{http_port}', '--dev', '--server-pid',
                 str(server.pid), '--rooms', '2', '--video-publishers', '1', '--video-with-audio',
                 '--subscribers', '4', '--duration', '3s', '--preset', 'low', '--threads', '1', '--quiet',
                 '--seed', str(cycle)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            whip = whip_whep_cycle(args.bin, base, room, args.whip_per_cycle)
            if not wait_empty(base):
                raise RuntimeError(f'cycle {cycle}: participants still counted 30 s after it ended')
            sample = proc_status(server.pid)
            sample.update(cycle=cycle, minute=(time.monotonic() - started) / 60, **whip)
            samples.append(sample)
            print(f"cycle {cycle:3d}  {sample['minute']:5.2f} min  RSS {sample['rss_kib']} KiB  "
                  f"fds {sample['fds']}  threads {sample['threads']}  "
                  f"(database connections {sample['db_connections']})", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)

    steady = [s for s in samples if s['minute'] >= args.warmup]
    per_minute = slope([(s['minute'], s['rss_kib']) for s in steady]) if len(steady) > 2 else float('nan')
    per_cycle = slope([(s['cycle'], s['rss_kib']) for s in steady]) if len(steady) > 2 else float('nan')
    level = sum(s['rss_kib'] for s in steady) / len(steady) if steady else float('nan')
    last = samples[-1]
    report = {
        'minutes': args.minutes, 'cycles': len(samples), 'baseline': baseline, 'last': last,
        'rss_slope_kib_per_minute': per_minute, 'rss_slope_kib_per_cycle': per_cycle,
        'rss_steady_mean_kib': level, 'samples': samples,
    }
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    # Descriptors and threads other than the database pool's are compared with the first
    # sample after the warm-up (the first cycles open what the server keeps for good: worker
    # runtimes, sockets); one or two descriptors come and go with the sampling's own HTTP
    # requests. The pool may open connections up to its bound at any time.
    first = steady[0] if steady else samples[0]
    leaked = (last['fds_other'] > first['fds_other'] + 2 or last['threads_other'] > first['threads_other']
              or max(s['db_connections'] for s in samples) > 8)
    print(f"\n{len(samples)} cycles in {args.minutes} min: RSS {baseline['rss_kib']} KiB at start, "
          f"{level:.0f} KiB mean after {args.warmup} min, slope {per_minute:+.1f} KiB/min "
          f"({per_cycle:+.2f} KiB/cycle); besides the database pool: fds {baseline['fds_other']} idle, "
          f"{first['fds_other']} after warm-up, {last['fds_other']} at the end; threads "
          f"{baseline['threads_other']} idle, {first['threads_other']} after warm-up, "
          f"{last['threads_other']} at the end; database connections {baseline['db_connections']} idle, "
          f"{last['db_connections']} at the end (at most 8)")
    growing = per_minute * 10 > 0.01 * level
    return 1 if leaked or growing else 0


if __name__ == '__main__':
    sys.exit(main())
