#!/usr/bin/python3
"""Real BitTorrent clients transfer a file through a tracker, nothing else.

A libtorrent seeder announces a fresh random file to ANNOUNCE; once the
tracker has answered it, a leecher (aria2 or libtorrent) starts with the same
.torrent and must download the file. With --torrent and --payload, the
torrent is one a registry made (its own announce URLs and web seeds) instead.
The libtorrent leecher ignores web seeds, so the bytes can only come from the
seeder; aria2 uses them, so --strip-webseed gives it a copy without url-list
(same infohash). With --webseed-only no seeder runs and the web seed is the
only source, for either leecher. DHT, local peer discovery, UPnP/NAT-PMP,
uTP and peer exchange are all off, so the only way the peers can find each
other is the tracker. The downloaded file's SHA-256 is checked.

Run with Debian's /usr/bin/python3 (python3-libtorrent); prints one line
starting with "interop ok:" and exits 0, or explains and exits non-zero.
Debian's libtorrent 2.0.8 binding can segfault inside wait_for_alert(), so
alerts are polled with pop_alerts() instead.
"""

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

import libtorrent as lt


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session(port):
    settings = {
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        # libtorrent refuses web seeds on loopback whose URL has a query
        # string (SSRF mitigation); here every service is on loopback, and
        # the bridge's web seed URL carries its token as ?jwt=. Off the
        # loopback interface the mitigation does not apply.
        "ssrf_mitigation": False,
        "alert_mask": lt.alert.category_t.all_categories,
    }
    # flags=0: no default plugins, so no ut_pex / ut_metadata peer sources.
    return lt.session(settings, 0)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_torrent(path, announce, mint):
    """A v1 torrent of `path`; with `mint`, its announce URL carries a token for its infohash."""
    fs = lt.file_storage()
    lt.add_files(fs, path)
    # v1 only, as registries generate them (libtorrent 2 would make a v1+v2 hybrid,
    # which aria2 fails to download from a libtorrent seeder).
    creator = lt.create_torrent(fs, 256 * 1024, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, os.path.dirname(path))
    torrent = creator.generate()
    info_hash = hashlib.sha1(lt.bencode(torrent[b"info"])).hexdigest()
    if mint:
        token = subprocess.run(mint + ["--infohash", info_hash], check=True, capture_output=True, text=True).stdout.strip()
        announce = f"{announce}?jwt={token}"
    torrent[b"announce"] = announce.encode()
    return lt.bencode(torrent)


def add(ses, torrent_path, save_path, web_seeds=True):
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent_path)
    if not web_seeds:
        params.ti.set_web_seeds([])
    params.save_path = save_path
    return ses.add_torrent(params)


def drain(ses, log, label):
    """Pops alerts; returns the tracker replies and errors seen."""
    replies, errors = [], []
    for alert in ses.pop_alerts():
        kind = type(alert).__name__
        if kind == "tracker_reply_alert":
            replies.append(alert.message())
        elif kind in ("tracker_error_alert", "tracker_warning_alert", "scrape_failed_alert"):
            errors.append(alert.message())
        if kind.startswith("tracker") or kind.endswith("error_alert"):
            log.write(f"[{label}] {kind}: {alert.message()}\n")
    return replies, errors


def wait_for_announce(ses, log, label, deadline):
    while time.time() < deadline:
        replies, errors = drain(ses, log, label)
        if replies:
            return
        for error in errors:
            log.write(f"[{label}] tracker said: {error}\n")
        time.sleep(0.05)
    sys.exit(f"interop failed: the {label} got no tracker reply before the deadline")


def without_web_seeds(torrent_path, work):
    """A copy of the torrent without its url-list: the same infohash (url-list
    is outside the info dictionary), but no HTTP source for the bytes."""
    torrent = lt.bdecode(open(torrent_path, "rb").read())
    torrent.pop(b"url-list", None)
    path = os.path.join(work, "no-webseed.torrent")
    with open(path, "wb") as f:
        f.write(lt.bencode(torrent))
    return path


def run_aria2(torrent_path, leech_dir, seeder, log, deadline):
    port = free_port()
    command = [
        "aria2c", f"--dir={leech_dir}", "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
        "--bt-enable-lpd=false", "--enable-peer-exchange=false", f"--listen-port={port}",
        "--summary-interval=0", "--console-log-level=info", "--file-allocation=none",
        "--bt-stop-timeout=60", torrent_path,
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    while process.poll() is None:
        if seeder is not None:
            drain(seeder, log, "seeder")
        if time.time() > deadline:
            process.kill()
            sys.exit("interop failed: aria2 did not finish before the deadline")
        time.sleep(0.1)
    if process.returncode != 0:
        sys.exit(f"interop failed: aria2 exited with {process.returncode}")


def leech(torrent_path, leech_dir, deadline, web_seeds=False):
    """The libtorrent leecher, run in a process of its own: libtorrent keeps UDP
    tracker connection ids in a process-wide cache, so a second session in the
    seeder's process would reuse the seeder's id, which the tracker (rightly)
    refuses from another port."""
    leecher = session(free_port())
    handle = add(leecher, torrent_path, leech_dir, web_seeds)
    while time.time() < deadline:
        drain(leecher, sys.stdout, "leecher")
        if handle.status().is_seeding:
            # Let the completed announce reach the tracker before leaving.
            handle.force_reannounce()
            time.sleep(0.5)
            drain(leecher, sys.stdout, "leecher")
            return
        time.sleep(0.1)
    sys.exit("interop failed: the libtorrent leecher did not finish before the deadline")


def run_libtorrent(torrent_path, leech_dir, seeder, log, deadline, web_seeds=False):
    command = [sys.executable, __file__, "--leech-only", torrent_path, leech_dir,
               "--timeout", str(max(1.0, deadline - time.time())), "--announce", "unused://127.0.0.1"]
    if web_seeds:
        command.append("--webseed-only")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    while process.poll() is None:
        if seeder is not None:
            drain(seeder, log, "seeder")
        if time.time() > deadline + 5:
            process.kill()
            sys.exit("interop failed: the libtorrent leecher did not finish before the deadline")
        time.sleep(0.1)
    if process.returncode != 0:
        sys.exit(f"interop failed: the libtorrent leecher exited with {process.returncode}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--announce", help="announce URL, e.g. http://127.0.0.1:6969/announce")
    parser.add_argument("--torrent", help="seed this .torrent (e.g. from a registry) instead of making one")
    parser.add_argument("--payload", help="with --torrent: the file the torrent describes")
    parser.add_argument("--webseed-only", action="store_true",
                        help="with --torrent: no seeder; the leecher downloads from the web seed")
    parser.add_argument("--strip-webseed", action="store_true",
                        help="with --torrent: drop the url-list first, so aria2 (which uses web seeds) "
                             "can only get the bytes from the seeder")
    parser.add_argument("--leecher", choices=["aria2", "libtorrent"], default="aria2")
    parser.add_argument("--size-mib", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--mint", nargs=argparse.REMAINDER, default=None,
                        help="a `swarmgate mint ...` command line without --infohash; the token goes in the announce URL")
    parser.add_argument("--leech-only", nargs=2, metavar=("TORRENT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leech_only:
        leech(args.leech_only[0], args.leech_only[1], time.time() + args.timeout, args.webseed_only)
        return
    if args.torrent:
        if not args.payload:
            sys.exit("--torrent needs --payload")
        info = lt.torrent_info(args.torrent)
        urls = [t.url for t in info.trackers()] + [w["url"] for w in info.web_seeds()]
    elif args.announce:
        urls = [args.announce]
    else:
        sys.exit("give --announce, or --torrent and --payload")
    for url in urls:
        host = urlsplit(url).hostname or ""
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            sys.exit(f"interop refuses to reach anywhere but loopback: {url}")

    work = tempfile.mkdtemp(prefix="swarmgate-interop-")
    log_path = os.path.join(work, "clients.log")
    try:
        with open(log_path, "w") as log:
            seed_dir, leech_dir = os.path.join(work, "seed"), os.path.join(work, "leech")
            os.makedirs(seed_dir)
            os.makedirs(leech_dir)
            if args.torrent:
                torrent_path = args.torrent
                if args.strip_webseed:
                    torrent_path = without_web_seeds(torrent_path, work)
                name = lt.torrent_info(torrent_path).name()
                payload = os.path.join(seed_dir, name)
                shutil.copyfile(args.payload, payload)
                schemes = sorted({urlsplit(t.url).scheme for t in lt.torrent_info(torrent_path).trackers()})
                scheme = "+".join(schemes) + " (registry's torrent)"
            else:
                name = "layer.bin"
                payload = os.path.join(seed_dir, name)
                with open(payload, "wb") as f:
                    f.write(os.urandom(args.size_mib << 20))
                torrent_path = os.path.join(work, "layer.torrent")
                with open(torrent_path, "wb") as f:
                    f.write(make_torrent(payload, args.announce, args.mint))
                scheme = urlsplit(args.announce).scheme + (" (signed announce URL)" if args.mint else "")
            size_mib = os.path.getsize(payload) / (1 << 20)

            deadline = time.time() + args.timeout
            started = time.time()
            if args.webseed_only and args.leecher == "aria2":
                run_aria2(torrent_path, leech_dir, None, log, deadline)
                source, uploaded = "the web seed, no seeder running", 0
            elif args.webseed_only:
                run_libtorrent(torrent_path, leech_dir, None, log, deadline, web_seeds=True)
                source, uploaded = "the web seed, no seeder running", 0
            else:
                seeder = session(free_port())
                seeding = add(seeder, torrent_path, seed_dir)
                wait_for_announce(seeder, log, "seeder", deadline)
                started = time.time()
                if args.leecher == "aria2":
                    run_aria2(torrent_path, leech_dir, seeder, log, deadline)
                else:
                    run_libtorrent(torrent_path, leech_dir, seeder, log, deadline)
                drain(seeder, log, "seeder")
                uploaded = seeding.status().total_payload_upload
                source = f"a libtorrent seeder found only through the {scheme} tracker"
            elapsed = time.time() - started

            got = os.path.join(leech_dir, name)
            if not os.path.exists(got) or sha256(got) != sha256(payload):
                sys.exit("interop failed: the downloaded file differs from the seeded one")
            info_hash = lt.torrent_info(torrent_path).info_hash()
            print(f"interop ok: {args.leecher} leecher downloaded {size_mib:g} MiB from {source} "
                  f"in {elapsed:.1f} s; sha256 {sha256(got)[:16]}... matches; seeder uploaded {uploaded} bytes; "
                  f"infohash {info_hash}")
    except SystemExit:
        with open(log_path) as log:
            sys.stderr.write("---- client log ----\n" + log.read()[-6000:])
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
