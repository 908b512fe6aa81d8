// Streams for EventSource against a live server: the URLs with a ticket (streamUrl,
// jobsStreamUrl, logStreamUrl), and eventSource(), which opens a new EventSource with a
// fresh ticket when the server closes a stream to be reconnected or refuses an expired
// ticket, resuming with last_event_id. Node has no EventSource: the tests pass
// testing/eventsource.js's.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Client, { JobEventSource, NickJobsError } from '../index.js';
import { TestEventSource, recordingEventSource } from '../testing/eventsource.js';
import { startRelay } from '../testing/relay.js';
import { USERS, startServer, waitForStatus as waitForJob } from '../testing/server.js';

let server;
let cli;
let admin;
let alice;

before(async () => {
  // Tickets live 2 to 3 s (their expiry is in whole seconds): long enough to open a
  // stream on a busy machine, short enough to see one expire.
  server = await startServer({ settings: { 'nick_jobs.stream_ticket_ttl': '3' } });
  cli = Client.initialize({ apiPath: server.url });
  admin = (await cli.login({ data: { login: 'admin', password: USERS.admin } })).data.token;
  alice = (await cli.login({ data: { login: 'alice', password: USERS.alice } })).data.token;
});

after(async () => {
  await server?.stop();
});

async function submit(params, token = admin) {
  const { data } = await cli.createJob({ token, data: { params: { action: 'dummy', ...params } } });
  return data.uuid;
}

function waitForStatus(id, wanted, timeoutMs) {
  return waitForJob(cli, admin, id, wanted, timeoutMs);
}

/** Every event of a TestEventSource on `url` until `until(event)`; then it is closed. */
function readSource(url, until) {
  const source = new TestEventSource(url);
  const events = [];
  return new Promise((resolve, reject) => {
    for (const name of ['status', 'progress', 'log', 'close']) {
      source.addEventListener(name, (event) => {
        const item = { event: name, data: JSON.parse(event.data), id: event.lastEventId };
        events.push(item);
        if (until(item)) {
          source.close();
          resolve(events);
        }
      });
    }
    source.addEventListener('error', () => {
      if (source.readyState === TestEventSource.CLOSED) {
        reject(new Error(`the EventSource failed: ${source.answers}`));
      }
    });
  });
}

const isClose = (event) => event.event === 'close';
const messages = (events) => events.filter((e) => e.event === 'log').map((e) => e.data.message);
const stepsDone = (from, to, total) =>
  Array.from({ length: to - from + 1 }, (_, i) => `step ${from + i} of ${total} done`);

async function storedLines(id) {
  const lines = [];
  for await (const line of cli.iterJobLog({ token: admin, params: { id } })) lines.push(line.message);
  return lines;
}

describe('stream URLs with a ticket', () => {
  test('streamUrl opens a job stream without a header', async () => {
    const id = await submit({ steps: 2, result: { answer: 42 } });
    await waitForStatus(id, ['completed']);
    const url = await cli.streamUrl({ token: admin, params: { id } });
    assert.match(url, new RegExp(`^${server.url}/@jobs/${id}/stream\\?ticket=[\\w.-]+$`));
    const events = await readSource(url, isClose);
    assert.deepEqual(
      events.map((e) => e.event),
      ['status', 'progress', 'close'],
    );
    assert.deepEqual(events[0].data.result, { answer: 42 });
    assert.deepEqual(events.at(-1).data, { reason: 'finished', reconnect: false });
  });

  test('lastEventId makes the URL start after that event', async () => {
    const id = await submit({ steps: 2 });
    await waitForStatus(id, ['completed']);
    const first = await readSource(await cli.streamUrl({ token: admin, params: { id } }), isClose);
    const url = await cli.streamUrl({ token: admin, params: { id }, lastEventId: first[1].id });
    assert.ok(url.endsWith(`&last_event_id=${encodeURIComponent(first[1].id)}`), url);
    const rest = await readSource(url, isClose);
    assert.deepEqual(
      rest.map((e) => e.event),
      ['close'],
    );
  });

  test('jobsStreamUrl opens the all-jobs stream', async () => {
    const url = await cli.jobsStreamUrl({ token: admin });
    assert.match(url, new RegExp(`^${server.url}/@jobs/stream\\?ticket=[\\w.-]+$`));
    const source = new TestEventSource(url);
    await new Promise((resolve) => source.addEventListener('open', resolve, { once: true }));
    const seen = new Promise((resolve) => {
      source.addEventListener('status', (event) => {
        const job = JSON.parse(event.data);
        if (job.status === 'completed') resolve(job);
      });
    });
    const id = await submit({ result: { answer: 42 } });
    const job = await seen;
    source.close();
    assert.equal(job.uuid, id);
    assert.deepEqual(job.result, { answer: 42 });
  });

  test('logStreamUrl opens a followed log, with its level', async () => {
    const id = await submit({ steps: 3 });
    await waitForStatus(id, ['completed']);
    const url = await cli.logStreamUrl({ token: admin, params: { id }, query: { level: 'info' } });
    const expected = `^${server.url}/@jobs/${id}/log\\?level=info&follow=true&ticket=[\\w.-]+$`;
    assert.match(url, new RegExp(expected));
    const events = await readSource(url, isClose);
    assert.deepEqual(messages(events), stepsDone(1, 3, 3));
    assert.deepEqual(events.at(-1).data, { reason: 'finished', reconnect: false });
    // Each line's id resumes after it.
    const resumed = await cli.logStreamUrl({ token: admin, params: { id }, lastEventId: events[0].id });
    assert.deepEqual(messages(await readSource(resumed, isClose)), stepsDone(2, 3, 3));
  });

  test('refusals reject with the server body; a missing id is a TypeError', async () => {
    await assert.rejects(cli.streamUrl({ params: { id: 'x' } }), (error) => {
      assert.ok(error instanceof NickJobsError);
      assert.equal(error.status, 401);
      assert.equal(error.type, 'Unauthorized');
      return true;
    });
    await assert.rejects(cli.logStreamUrl({ token: admin, params: {} }), TypeError);
  });
});

describe('eventSource', () => {
  test('follows a job to its end: onEvent gets each event, done resolves', async () => {
    const id = await submit({ sleep: 1, steps: 4, result: { answer: 42 } });
    await waitForStatus(id, ['running']);
    const { EventSource, made } = recordingEventSource();
    const events = [];
    let opened = 0;
    const live = cli.eventSource({
      token: admin,
      kind: 'job',
      params: { id },
      EventSource,
      onEvent: (event) => events.push(event),
      onOpen: () => {
        opened += 1;
      },
    });
    assert.ok(live instanceof JobEventSource);
    await live.done;
    assert.equal(live.closed, true);
    assert.equal(made.length, 1);
    assert.equal(made[0].readyState, TestEventSource.CLOSED);
    assert.equal(opened, 1);
    assert.equal(events[0].event, 'status');
    const final = events.filter((e) => e.event === 'status').at(-1).data;
    assert.equal(final.status, 'completed');
    assert.deepEqual(final.result, { answer: 42 });
    assert.ok(events.some((e) => e.event === 'progress'));
    const lines = messages(events);
    assert.deepEqual(lines, stepsDone(5 - lines.length, 4, 4));
    assert.deepEqual(events.at(-1).event, 'close');
    assert.deepEqual(events.at(-1).data, { reason: 'finished', reconnect: false });
    assert.equal(live.lastEventId, events.at(-2).id);
  });

  const slow = { timeout: 60000 };
  test('a ticket refused on reconnection: a new ticket, resumed after the last event', slow, async () => {
    const relay = await startRelay(new URL(server.url).port);
    try {
      const through = Client.initialize({ apiPath: relay.url });
      const id = await submit({ sleep: 8, steps: 16 });
      await waitForStatus(id, ['running']);
      const { EventSource, made } = recordingEventSource();
      const events = [];
      let firstLine;
      const sawLine = new Promise((resolve) => {
        firstLine = resolve;
      });
      const live = through.eventSource({
        token: admin,
        params: { id },
        EventSource,
        onEvent(event) {
          events.push(event);
          if (event.event === 'log') firstLine();
        },
      });
      await sawLine;
      // Wait until the server refuses the first ticket (an id it did not write is a 400
      // while the ticket is valid, and opens nothing), then drop the connection: the
      // EventSource reconnects by itself with the expired ticket, and is refused.
      const ticketUrl = made[0].url;
      const deadline = Date.now() + 10000;
      for (;;) {
        const probe = await fetch(`${ticketUrl.replace(relay.url, server.url)}&last_event_id=x`);
        await probe.body?.cancel();
        if (probe.status === 401) break;
        assert.equal(probe.status, 400);
        assert.ok(Date.now() < deadline, 'the ticket did not expire in 10 s');
        await new Promise((ok) => setTimeout(ok, 100));
      }
      const seenBeforeCut = events.length;
      relay.cut();
      await live.done;
      assert.equal(made.length, 2);
      assert.deepEqual(made[0].answers, [200, 401]);
      assert.deepEqual(made[1].answers, [200]);
      const reopened = new URL(made[1].url);
      // A ticket asked for anew: the first one had expired, so this one is another.
      const ticket = (url) => new URL(url).searchParams.get('ticket');
      assert.notEqual(ticket(made[1].url), ticket(ticketUrl));
      const resumedAfter = reopened.searchParams.get('last_event_id');
      assert.ok(events.slice(0, seenBeforeCut).some((e) => e.id === resumedAfter), resumedAfter);
      // Every line from the first one seen, each once, in order; the job's end.
      const lines = messages(events);
      const stored = await storedLines(id);
      assert.deepEqual(lines, stored.slice(stored.length - lines.length));
      assert.equal(lines.at(-1), 'step 16 of 16 done');
      assert.equal(events.filter((e) => e.event === 'status').at(-1).data.status, 'completed');
    } finally {
      relay.close();
    }
  });

  test('refused at once: a job the user may not see, an invalid token', async () => {
    const id = await submit({});
    const { EventSource, made } = recordingEventSource();
    const errors = [];
    const live = cli.eventSource({
      token: alice,
      params: { id },
      EventSource,
      onError: (error) => errors.push(error),
    });
    const error = await live.done.then(
      () => assert.fail('expected done to reject'),
      (reason) => reason,
    );
    assert.ok(error instanceof NickJobsError);
    assert.equal(error.status, 404);
    assert.deepEqual(errors, [error]);
    assert.equal(made.length, 1);
    assert.deepEqual(made[0].answers, [404]);
    const invalid = cli.eventSource({ token: 'not-a-token', kind: 'jobs', EventSource });
    await assert.rejects(invalid.done, (reason) => reason.status === 401);
    assert.equal(made.length, 1, 'no EventSource without a ticket');
  });

  test('close() and an aborted signal end it; done resolves', async () => {
    const id = await submit({ sleep: 300, steps: 3000 });
    const { EventSource, made } = recordingEventSource();
    let statusSeen;
    const seen = new Promise((resolve) => {
      statusSeen = resolve;
    });
    const live = cli.eventSource({ token: admin, params: { id }, EventSource, onEvent: statusSeen });
    assert.equal((await seen).event, 'status');
    assert.equal(live.source, made[0]);
    live.close();
    await live.done;
    assert.equal(live.source, null);
    assert.equal(made[0].readyState, TestEventSource.CLOSED);
    const controller = new AbortController();
    const opened = new Promise((resolve) => {
      const other = cli.eventSource({
        token: admin,
        kind: 'jobs',
        EventSource,
        signal: controller.signal,
        onOpen: () => resolve(other),
      });
    });
    const other = await opened;
    controller.abort();
    await other.done;
    assert.equal(made.at(-1).readyState, TestEventSource.CLOSED);
    await cli.abortJob({ token: admin, params: { id } });
  });

  test('what it needs is checked at once', () => {
    assert.throws(() => cli.eventSource({ token: admin, kind: 'job', params: { id: 'x' } }), {
      name: 'TypeError',
      message: 'no EventSource here: pass one as eventSource({ EventSource })',
    });
    const { EventSource } = recordingEventSource();
    assert.throws(() => cli.eventSource({ token: admin, kind: 'jobz', EventSource }), TypeError);
    assert.throws(() => cli.eventSource({ token: admin, kind: 'log', EventSource }), TypeError);
  });
});

describe('a server whose streams end every 0.7 s', () => {
  let shortLived;
  before(async () => {
    shortLived = await startServer({ settings: { 'nick_jobs.stream_max_lifetime': '0.7' } });
  });
  after(async () => {
    await shortLived?.stop();
  });

  const slow = { timeout: 60000 };
  test("eventSource follows a job's log across closes, each with a new ticket", slow, async () => {
    const short = Client.initialize({ apiPath: shortLived.url });
    const token = (await short.login({ data: { login: 'admin', password: USERS.admin } })).data.token;
    const { data: job } = await short.createJob({
      token,
      data: { params: { action: 'dummy', sleep: 2.5, steps: 5 } },
    });
    const { EventSource, made } = recordingEventSource();
    const events = [];
    let asked = 0;
    const live = short.eventSource({
      // A function: each ticket is asked with the token as it is then.
      token: () => {
        asked += 1;
        return token;
      },
      kind: 'log',
      params: { id: job.uuid },
      query: { level: 'info' },
      EventSource,
      onEvent: (event) => events.push(event),
    });
    await live.done;
    // The whole log, each line once, across the reopenings.
    assert.deepEqual(messages(events), stepsDone(1, 5, 5));
    const closes = events.filter(isClose).map((e) => e.data);
    assert.deepEqual(closes[0], { reason: 'lifetime', reconnect: true });
    assert.deepEqual(closes.at(-1), { reason: 'finished', reconnect: false });
    assert.equal(made.length, closes.length);
    // A ticket asked for each (two asked in the same second may be the same string).
    assert.equal(asked, made.length);
    const closedAt = events.flatMap((e, index) => (isClose(e) ? [index] : []));
    for (const [n, source] of made.entries()) {
      const url = new URL(source.url);
      assert.equal(url.pathname, `/@jobs/${job.uuid}/log`);
      assert.equal(url.searchParams.get('follow'), 'true');
      assert.equal(url.searchParams.get('level'), 'info');
      // Each one starts after the last line any before it had.
      const before = n === 0 ? [] : events.slice(0, closedAt[n - 1]);
      const last = before.filter((e) => e.event === 'log').at(-1)?.id ?? null;
      assert.equal(url.searchParams.get('last_event_id'), last);
    }
  });
});
