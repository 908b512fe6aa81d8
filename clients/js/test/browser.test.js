// The client as a page uses it: a relative apiPath read against the page's location
// (here a `globalThis.location` the tests set, as a page has one), against a live server
// under a path prefix; timeouts and AbortSignals on every call; what a failed fetch says.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';

import Client, { NickJobsError } from '../index.js';
import { TestEventSource } from '../testing/eventsource.js';
import { USERS, startServer, rejection } from '../testing/server.js';

let server;

before(async () => {
  server = await startServer({ prefix: '/api' });
});

after(async () => {
  await server?.stop();
});

afterEach(() => {
  delete globalThis.location;
});

/** Acts as if the code ran in a page at `href`. */
function inPage(href) {
  globalThis.location = new URL(href);
}

/**
 * A server that takes requests and never finishes answering: with `partial`, it sends the
 * headers and the start of a body. `requests` resolves each time one comes in.
 */
async function hangingServer({ partial = false } = {}) {
  const sockets = new Set();
  const waiting = [];
  let count = 0;
  const http = createServer((request, response) => {
    count += 1;
    waiting.splice(0).forEach((resolve) => resolve());
    if (partial) {
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.write('[');
    }
  });
  http.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((ok) => http.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${http.address().port}`,
    get count() {
      return count;
    },
    /** Resolves once the server has taken its next request. */
    nextRequest: () => new Promise((resolve) => waiting.push(resolve)),
    close() {
      for (const socket of sockets) socket.destroy();
      http.close();
    },
  };
}

describe('apiPath', () => {
  test('outside a page, a relative apiPath is a TypeError that says why', () => {
    for (const apiPath of ['', '/', '/api', 'api']) {
      assert.throws(
        () => Client.initialize({ apiPath }),
        (error) =>
          error instanceof TypeError &&
          error.message.includes(`apiPath ${JSON.stringify(apiPath)} is relative`) &&
          error.message.includes('globalThis.location') &&
          error.message.includes('absolute URL'),
      );
    }
  });

  test("an apiPath that is neither an http(s) URL nor a path is a TypeError", () => {
    for (const apiPath of ['localhost:8080', 'ftp://example.org', 'http://']) {
      assert.throws(
        () => Client.initialize({ apiPath }),
        (error) => error instanceof TypeError && error.message.includes('not an http(s) URL'),
      );
    }
    assert.throws(() => Client.initialize({ apiPath: 8080 }), TypeError);
  });

  test("in a page, a relative apiPath is read against the page's location", () => {
    inPage('https://jobs.example/dashboard/index.html?tab=2#top');
    assert.equal(Client.initialize({ apiPath: '' }).url('/@jobs').href, 'https://jobs.example/@jobs');
    assert.equal(Client.initialize({ apiPath: '/' }).url('/@jobs').href, 'https://jobs.example/@jobs');
    const api = Client.initialize({ apiPath: '/api/' });
    assert.equal(api.apiPath, '/api');
    assert.equal(
      api.url('/@jobs', { status: 'running' }).href,
      'https://jobs.example/api/@jobs?status=running',
    );
    // Without a leading slash: from the page's folder, as a link in the page would be.
    assert.equal(
      Client.initialize({ apiPath: 'api' }).url('/@jobs').href,
      'https://jobs.example/dashboard/api/@jobs',
    );
    // A URL the server wrote (a next page) keeps the page's origin, without its fragment.
    assert.equal(
      api.url('http://backend:8080/api/@jobs?cursor=abc').href,
      'https://jobs.example/api/@jobs?cursor=abc',
    );
    // An absolute apiPath is not read against the page.
    assert.equal(
      Client.initialize({ apiPath: 'http://other.example:8080' }).url('/@jobs').href,
      'http://other.example:8080/@jobs',
    );
  });

  test("in a page served with the API, apiPath '/api' reaches it, pages and streams", async () => {
    inPage(`${server.url}/dashboard/`);
    const cli = Client.initialize({ apiPath: '/api' });
    const { data } = await cli.login({ data: { login: 'admin', password: USERS.admin } });
    const token = data.token;
    const created = [];
    for (let n = 0; n < 3; n += 1) {
      created.push((await cli.createJob({ token, data: { params: { action: 'dummy' } } })).data);
    }
    assert.ok(created[0]['@id'].startsWith(`${server.url}/api/@jobs/`));
    const seen = [];
    for await (const job of cli.iterJobs({ token })) seen.push(job.uuid);
    assert.deepEqual(new Set(seen), new Set(created.map((job) => job.uuid)));
    // A ticket's stream, named from the API's root, opens under the prefix.
    const id = created[0].uuid;
    const url = await cli.streamUrl({ token, params: { id } });
    assert.ok(url.startsWith(`${server.url}/api/@jobs/${id}/stream?ticket=`), url);
    const source = new TestEventSource(url);
    const first = await new Promise((resolve, reject) => {
      source.addEventListener('status', (event) => resolve(JSON.parse(event.data)));
      source.addEventListener('error', () => reject(new Error(`answers: ${source.answers}`)));
    });
    source.close();
    assert.equal(first.uuid, id);
  });
});

describe('timeouts and signals', () => {
  let hanging;
  let partial;
  before(async () => {
    hanging = await hangingServer();
    partial = await hangingServer({ partial: true });
  });
  after(() => {
    hanging?.close();
    partial?.close();
  });

  test("the client's timeout rejects every call with a NickJobsError naming it", async () => {
    const slow = Client.initialize({ apiPath: hanging.url, timeout: 150 });
    assert.equal(slow.timeout, 150);
    const calls = [
      ['GET', '/@jobs', () => slow.getJobs({ token: 't' })],
      ['POST', '/@login', () => slow.login({ data: { login: 'a', password: 'b' } })],
      ['GET', '/@jobs/@stats?minutes=60', () => slow.getStats({ token: 't', query: { minutes: 60 } })],
      ['POST', '/@stream-tickets', () => slow.jobsStreamUrl({ token: 't' })],
    ];
    for (const [method, path, call] of calls) {
      const error = await rejection(call());
      assert.ok(error instanceof NickJobsError, error);
      assert.equal(error.code, 'timeout');
      assert.equal(error.status, 0);
      assert.equal(error.method, method);
      assert.equal(error.url, hanging.url + path);
      assert.equal(error.message, `${method} ${hanging.url}${path} timed out after 150 ms`);
    }
  });

  test("a call's own timeout wins over the client's", async () => {
    const none = Client.initialize({ apiPath: hanging.url });
    assert.equal(none.timeout, null);
    const error = await rejection(none.getJob({ token: 't', params: { id: 'x' }, timeout: 80 }));
    assert.equal(error.message, `GET ${hanging.url}/@jobs/x timed out after 80 ms`);
    const slow = Client.initialize({ apiPath: hanging.url, timeout: 60000 });
    const query = { schedule: '* * * * *' };
    const soon = await rejection(slow.previewSchedule({ token: 't', query, timeout: 80 }));
    assert.equal(soon.code, 'timeout');
    assert.equal(
      soon.message,
      `GET ${hanging.url}/@scheduled-jobs/@preview?schedule=*+*+*+*+* timed out after 80 ms`,
    );
    assert.throws(() => Client.initialize({ apiPath: hanging.url, timeout: -1 }), TypeError);
    await assert.rejects(none.getJobs({ token: 't', timeout: 'soon' }), TypeError);
  });

  test('the timeout covers reading the answer, not only its headers', async () => {
    const cli = Client.initialize({ apiPath: partial.url, timeout: 150 });
    const error = await rejection(cli.getJobs({ token: 't' }));
    assert.equal(error.code, 'timeout');
    assert.equal(error.message, `GET ${partial.url}/@jobs timed out after 150 ms`);
  });

  test("aborting a call's signal rejects it with the signal's reason", async () => {
    const cli = Client.initialize({ apiPath: hanging.url, timeout: 60000 });
    const controller = new AbortController();
    const arrived = hanging.nextRequest();
    const pending = cli.getJobHistory({ token: 't', params: { id: 'x' }, signal: controller.signal });
    await arrived;
    controller.abort();
    const error = await rejection(pending);
    assert.equal(error.name, 'AbortError');
    assert.ok(!(error instanceof NickJobsError));
    const reason = new Error('the dashboard closed');
    const again = new AbortController();
    const next = hanging.nextRequest();
    const call = cli.createJob({ token: 't', data: {}, signal: again.signal });
    await next;
    again.abort(reason);
    assert.equal(await rejection(call), reason);
  });

  test('an aborted signal rejects before any request is made', async () => {
    const cli = Client.initialize({ apiPath: hanging.url });
    const made = hanging.count;
    const error = await rejection(cli.getJobs({ token: 't', signal: AbortSignal.abort() }));
    assert.equal(error.name, 'AbortError');
    const aborted = AbortSignal.abort();
    await assert.rejects(cli.streamUrl({ token: 't', params: { id: 'x' }, signal: aborted }), {
      name: 'AbortError',
    });
    assert.equal(hanging.count, made);
  });

  test('a stream times out waiting for its answer, not while it is open', async () => {
    const cli = Client.initialize({ apiPath: hanging.url, timeout: 100 });
    const stream = cli.streamJobs({ token: 't', reconnects: 0 });
    const error = await rejection(stream.next());
    assert.equal(error.code, 'timeout');
    assert.equal(error.message, `GET ${hanging.url}/@jobs/stream timed out after 100 ms`);
  });
});

describe('a fetch that fails', () => {
  let closed; // a port nothing listens on
  before(async () => {
    const probe = createServer();
    await new Promise((ok) => probe.listen(0, '127.0.0.1', ok));
    closed = `http://127.0.0.1:${probe.address().port}`;
    await new Promise((ok) => probe.close(ok));
  });

  test('outside a page it says the network or the server, and names the URL', async () => {
    const error = await rejection(Client.initialize({ apiPath: closed }).getJobs({ token: 't' }));
    assert.ok(error instanceof NickJobsError);
    assert.equal(error.code, 'network');
    assert.equal(error.status, 0);
    assert.equal(error.url, `${closed}/@jobs`);
    const start = `can't reach ${closed}/@jobs (GET: ECONNREFUSED): `;
    assert.ok(error.message.startsWith(start), error.message);
    assert.match(error.message, /the network or the server may be down$/);
    assert.ok(!error.message.includes('CORS'));
    assert.ok(error.cause instanceof TypeError);
  });

  test('in a page of another origin it says CORS may be why, naming the origin', async () => {
    inPage('https://dashboard.example/jobs/');
    const cli = Client.initialize({ apiPath: closed });
    const error = await rejection(cli.getJob({ token: 't', params: { id: 'x' } }));
    assert.equal(error.code, 'network');
    assert.equal(error.url, `${closed}/@jobs/x`);
    const start = `can't reach ${closed}/@jobs/x (GET: ECONNREFUSED): `;
    assert.ok(error.message.startsWith(start), error.message);
    assert.ok(
      error.message.endsWith(
        'the network or the server may be down, or the browser refused the cross-origin ' +
          'request (CORS): the server must allow the origin https://dashboard.example',
      ),
      error.message,
    );
  });

  test('in a page of the same origin, CORS is not the reason', async () => {
    inPage(`${closed}/dashboard/`);
    const error = await rejection(Client.initialize({ apiPath: '/api' }).getJobs({ token: 't' }));
    assert.equal(error.url, `${closed}/api/@jobs`);
    assert.ok(!error.message.includes('CORS'), error.message);
  });
});
