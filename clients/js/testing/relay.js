import { createServer, connect } from 'node:net';

// A TCP relay in front of the server: cut() drops its connections as a network would;
// requests holds what each connection's client sent.
export function startRelay(port) {
  const sockets = new Set();
  const requests = [];
  const relay = createServer((client) => {
    const index = requests.push('') - 1;
    const upstream = connect(Number(port), '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
    }
    client.on('data', (chunk) => {
      requests[index] += chunk.toString('latin1');
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((ok) => {
    relay.listen(0, '127.0.0.1', () =>
      ok({
        url: `http://127.0.0.1:${relay.address().port}`,
        requests,
        cut() {
          for (const socket of sockets) socket.destroy();
        },
        close() {
          relay.close();
          for (const socket of sockets) socket.destroy();
        },
      }),
    );
  });
}
