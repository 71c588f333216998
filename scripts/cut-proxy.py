#!/usr/bin/env python3
"""A loopback TCP proxy that tests cut on purpose, to take a server away from a client and give it back.

Forwards 127.0.0.1:PORT (a free port, written to --port-file) to --target HOST:PORT.
  SIGUSR1 cuts: every open connection is reset and the port stops listening, so new connections are refused.
  SIGUSR2 restores: the port listens again (the same port).
After each change the state ("open" or "cut") is written to --state-file, so a test waits on the
file rather than sleeping.
"""
import argparse, os, selectors, signal, socket, struct

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
parser.add_argument("--port-file", required=True)
parser.add_argument("--state-file", required=True)
args = parser.parse_args()
target_host, target_port = args.target.rsplit(":", 1)
target = (target_host, int(target_port))

selector = selectors.DefaultSelector()
peers = {}          # socket -> the socket it forwards to
listener = None
port = 0
requests = []       # "cut" / "open", appended by the signal handlers, applied by the loop


def write_atomically(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def listen():
    global listener, port
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    port = listener.getsockname()[1]
    listener.listen(64)
    selector.register(listener, selectors.EVENT_READ)


def close_pair(sock, reset=False):
    other = peers.pop(sock, None)
    for s in (sock, other):
        if s is None:
            continue
        peers.pop(s, None)
        try:
            selector.unregister(s)
        except (KeyError, ValueError):
            pass
        if reset:  # an RST, as a dropped link or a killed server gives the client
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def cut():
    global listener
    for sock in list(peers):
        if sock in peers:
            close_pair(sock, reset=True)
    if listener is not None:
        selector.unregister(listener)
        listener.close()
        listener = None
    write_atomically(args.state_file, "cut")


def restore():
    if listener is None:
        listen()
    write_atomically(args.state_file, "open")


# The parent may have blocked these (a test runner's children inherit its signal mask).
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM})
signal.signal(signal.SIGUSR1, lambda *_: requests.append("cut"))
signal.signal(signal.SIGUSR2, lambda *_: requests.append("open"))
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
listen()
write_atomically(args.state_file, "open")
write_atomically(args.port_file, str(port))

while True:
    while requests:
        cut() if requests.pop(0) == "cut" else restore()
    for key, _ in selector.select(timeout=0.05):
        sock = key.fileobj
        if sock is listener:
            client, _ = listener.accept()
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            peers[client], peers[upstream] = upstream, client
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            continue
        if sock not in peers:
            continue
        try:
            data = sock.recv(65536)
            if data:
                peers[sock].sendall(data)
                continue
        except OSError:
            pass
        close_pair(sock)
