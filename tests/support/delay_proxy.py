"""A proxy in front of a plain-HTTP registry that adds a fixed delay to every request, as a
registry across a network would, and logs each request line: for cargo-microimage's
round-trip test and benches/push.sh.

  delay_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS LOG_FILE [oci-subject]

With `oci-subject`, every answer to a manifest PUT also carries an `OCI-Subject` header
(naming the manifest's digest), as some registries send it without having the referrers
API (the registry behind answers 404 on /referrers/).

Each request gets a connection of its own (`Connection: close` is added), so every request
is seen and delayed, whatever the client's connection reuse; the client opens the next
connection itself, as it would after a server closed one. TLS hellos (clients probing for
HTTPS) are passed through untouched and undelayed: the registry behind is plain HTTP and
answers them as such.
"""

import asyncio
import sys

LISTEN, UPSTREAM, DELAY, LOG = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    int(sys.argv[3]) / 1000,
    sys.argv[4],
)
OCI_SUBJECT = len(sys.argv) > 5 and sys.argv[5] == "oci-subject"


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_r, client_w):
    try:
        first = await client_r.readexactly(1)
    except (asyncio.IncompleteReadError, ConnectionError):
        client_w.close()
        return
    up_r, up_w = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    if first == b"\x16":
        up_w.write(first)
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
        return
    try:
        head = first + await client_r.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        client_w.close()
        up_w.close()
        return
    line, _, rest = head.partition(b"\r\n")
    headers = [
        h for h in rest.split(b"\r\n") if not h.lower().startswith(b"connection:")
    ]
    with open(LOG, "a") as log:
        log.write(line.decode("latin-1") + "\n")
    await asyncio.sleep(DELAY)
    up_w.write(line + b"\r\nConnection: close\r\n" + b"\r\n".join(headers))
    await up_w.drain()
    method, _, target = line.partition(b" ")
    if OCI_SUBJECT and method == b"PUT" and b"/manifests/" in target:
        upload = asyncio.ensure_future(pipe(client_r, up_w))
        try:
            answer = await up_r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            client_w.close()
            await upload
            return
        status, _, rest = answer.partition(b"\r\n")
        subject = target.split(b" ")[0].rsplit(b"/", 1)[-1]
        client_w.write(status + b"\r\nOCI-Subject: " + subject + b"\r\n" + rest)
        await client_w.drain()
        await asyncio.gather(upload, pipe(up_r, client_w))
        return
    await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
