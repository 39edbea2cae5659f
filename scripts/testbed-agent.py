#!/usr/bin/env python3
"""One BitTorrent agent of the testbed (scripts/testbed), run inside its own
network namespace: a libtorrent session with DHT, LSD, PEX, UPnP and NAT-PMP
off, so peers come only from the tracker.

It prints one JSON line when its torrent is complete ({"done": seconds since
start}), then seeds until its standard input closes, prints a last line
with its totals, and exits once it has told the tracker it stopped (the
stopped announce carries its final uploaded and downloaded). The origin runs it with --seed (the file is already there).
Alerts are polled with pop_alerts(): Debian's libtorrent 2.0.8 binding can
crash in wait_for_alert().
"""

import argparse
import json
import os
import select
import sys
import time

import libtorrent as lt


def probe(torrent, source, left):
    """One announce with numwant=1 from `source` (an address of this
    namespace) to the torrent's tracker: which peer comes first."""
    import http.client
    import ipaddress
    import urllib.parse

    info = lt.torrent_info(torrent)
    family_v6 = ":" in source
    url = next(t.url for t in info.trackers() if ("[" in t.url) == family_v6)
    parts = urllib.parse.urlsplit(url)
    info_hash = urllib.parse.quote_from_bytes(bytes.fromhex(str(info.info_hash())))
    query = f"{parts.query}&info_hash={info_hash}&peer_id=-TBPROBE-00000000000&port=9&uploaded=0&downloaded=0&left={left}&numwant=1&compact=1"
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10, source_address=(source, 0))
    connection.request("GET", f"{parts.path}?{query}")
    body = connection.getresponse().read()
    reply = lt.bdecode(body)
    peers = []
    for key, width in ((b"peers", 4), (b"peers6", 16)):
        blob = reply.get(key, b"")
        for i in range(0, len(blob), width + 2):
            ip = ipaddress.ip_address(blob[i:i + width])
            peers.append(f"{ip}")
    print(json.dumps({"peers": peers, "failure": reply.get(b"failure reason", b"").decode()}), flush=True)


def serve_webseed(directory, port):
    """The origin as a BEP 19 web seed: the layer over HTTP with Range
    support (Python's own file server ignores Range, which web seeds need).
    Prints {"serving": port}, then serves until its standard input closes
    and prints {"sent": bytes of bodies sent}."""
    import http.server
    import os
    import socket
    import threading

    sent = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            path = os.path.join(directory, os.path.basename(self.path.split("?")[0]))
            if not os.path.isfile(path):
                self.send_error(404)
                return
            size = os.path.getsize(path)
            start, end = 0, size - 1
            ranged = self.headers.get("Range", "").startswith("bytes=")
            if ranged:
                first, _, last = self.headers["Range"][6:].split(",")[0].partition("-")
                start = int(first) if first else size - int(last)
                end = min(int(last), size - 1) if first and last else size - 1
            if start > end or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if ranged else 200)
            self.send_header("Content-Length", str(end - start + 1))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left:
                    chunk = f.read(min(left, 1 << 16))
                    self.wfile.write(chunk)
                    left -= len(chunk)
                    with lock:
                        sent[0] += len(chunk)

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

        def server_bind(self):
            # Dual-stack: IPv4 agents and IPv6-only racks alike.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    server = Server(("::", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"serving": port}), flush=True)
    sys.stdin.read()
    server.shutdown()
    print(json.dumps({"sent": sent[0]}), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--webseed":
        serve_webseed(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--torrent", required=True)
    parser.add_argument("--save", required=True)
    parser.add_argument("--listen", required=True, help="address:port (IPv6 in brackets)")
    parser.add_argument("--numwant", type=int, default=5)
    parser.add_argument("--seed", action="store_true")
    parser.add_argument("--deadline", type=float, default=300.0)
    args = parser.parse_args()

    settings = {
        "listen_interfaces": args.listen,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "num_want": args.numwant,
        # The torrent lists the tracker over IPv4 and IPv6; an IPv6-only
        # agent reaches only the second, a dual-stack one both.
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        # Fewer connections than agents, so whom the tracker hands out matters.
        "connections_limit": 16,
        # A peer that finishes closes every connection that looks useless
        # to both ends at that instant: a leecher whose only missing piece
        # is the one just finished has not heard its HAVE yet, so it is
        # dropped and waits seconds for a reconnect. Keep such connections.
        "close_redundant_connections": False,
        # Closing the session waits this long for the stopped announces.
        "stop_tracker_timeout": 5,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    }
    # flags=0: no default plugins, so no ut_pex peer exchange.
    session = lt.session(settings, 0)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save
    if args.seed:
        params.flags |= lt.torrent_flags.seed_mode
    # Not queued: an auto-managed torrent waits for the session's queue to
    # start it; unmanaged, a pull from seeders in the rack took 0.3 s, not 0.7.
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    handle = session.add_torrent(params)
    started = time.time()
    done = args.seed
    if done:
        print(json.dumps({"done": 0.0}), flush=True)
    # TB_TRACE=DIR: a line of progress and peers (address, down and up
    # rates) every quarter second, to see who fed whom.
    trace_dir = os.environ.get("TB_TRACE")
    # Named after the listen addresses (an IPv6-only agent's start with "[").
    name = "".join(c if c.isalnum() or c == "." else "_" for c in args.listen)
    trace = open(os.path.join(trace_dir, name + ".log"), "w") if trace_dir else None
    last_trace = 0.0
    while True:
        session.pop_alerts()
        status = handle.status()
        if trace and time.time() - last_trace > 0.25:
            last_trace = time.time()
            peers = [(p.ip[0], p.down_speed, p.up_speed) for p in handle.get_peer_info()]
            trace.write(json.dumps({"t": round(last_trace, 2), "progress": round(status.progress, 3),
                                    "next_announce": str(status.next_announce), "peers": peers}) + "\n")
            trace.flush()
        if not done and status.is_seeding:
            done = True
            print(json.dumps({"done": round(time.time() - started, 3)}), flush=True)
        if not done and time.time() - started > args.deadline:
            print(json.dumps({"timeout": round(status.progress, 4)}), flush=True)
            break
        # Seed on until the testbed closes our stdin.
        readable, _, _ = select.select([sys.stdin], [], [], 0.1)
        if readable and not sys.stdin.read(1):
            break
    status = handle.status()
    print(
        json.dumps(
            {
                "uploaded": status.all_time_upload,
                "downloaded": status.all_time_download,
                "peers_seen": status.list_peers,
            }
        ),
        flush=True,
    )
    # Deleting the session sends the stopped announces and waits for them.
    session.remove_torrent(handle)
    del handle
    del session


if __name__ == "__main__":
    main()
