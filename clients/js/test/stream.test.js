// streamJob and streamJobs against a live server: whole streams, resuming with
// Last-Event-ID after a dropped connection or a close that asks to reconnect, aborting.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Client, { NickJobsError } from '../index.js';
import { startRelay } from '../testing/relay.js';
import { USERS, startServer, waitForStatus as waitForJob } from '../testing/server.js';

let server;
let cli;
let admin;

before(async () => {
  server = await startServer();
  cli = Client.initialize({ apiPath: server.url });
  admin = (await cli.login({ data: { login: 'admin', password: USERS.admin } })).data.token;
});

after(async () => {
  await server?.stop();
});

function waitForStatus(id, wanted, timeoutMs) {
  return waitForJob(cli, admin, id, wanted, timeoutMs);
}

async function submit(params) {
  const { data } = await cli.createJob({ token: admin, data: { params: { action: 'dummy', ...params } } });
  return data.uuid;
}

async function collect(iterator, until = () => false) {
  const events = [];
  for await (const event of iterator) {
    events.push(event);
    if (until(event)) break;
  }
  return events;
}

const messages = (events) => events.filter((e) => e.event === 'log').map((e) => e.data.message);
const statuses = (events) => events.filter((e) => e.event === 'status').map((e) => e.data.status);
const stepsDone = (from, to, total) =>
  Array.from({ length: to - from + 1 }, (_, i) => `step ${from + i} of ${total} done`);

describe('streamJob', () => {
  test('a running job: its status first, then progress and log, until close', async () => {
    const id = await submit({ sleep: 1, steps: 4, result: { answer: 42 } });
    await waitForStatus(id, ['running']);
    const events = await collect(cli.streamJob({ token: admin, params: { id } }));
    assert.equal(events[0].event, 'status');
    assert.equal(events[0].data.uuid, id);
    assert.ok(events.some((e) => e.event === 'progress' && e.data.progress.steps.length === 4));
    const last = events.at(-1);
    assert.deepEqual(last, { event: 'close', data: { reason: 'finished', reconnect: false }, id: null });
    const final = events.filter((e) => e.event === 'status').at(-1).data;
    assert.equal(final.status, 'completed');
    assert.deepEqual(final.result, { answer: 42 });
    assert.ok(events.slice(0, -1).every((e) => typeof e.id === 'string' && e.id));
    // Lines written from the moment the stream opened, in order, each once.
    const lines = messages(events);
    assert.deepEqual(lines, stepsDone(5 - lines.length, 4, 4));
  });

  test('lastEventId starts after that event', async () => {
    // A second a step: the stream, opened once the job runs, sees a line before the end.
    const id = await submit({ sleep: 4, steps: 4 });
    await waitForStatus(id, ['running']);
    const first = await collect(cli.streamJob({ token: admin, params: { id } }), (e) => e.event === 'log');
    const seen = messages(first);
    await waitForStatus(id, ['completed']);
    const rest = await collect(
      cli.streamJob({ token: admin, params: { id }, lastEventId: first.at(-1).id }),
    );
    const total = stepsDone(1, 4, 4);
    const n = total.indexOf(seen[0]);
    assert.deepEqual(messages(rest), total.slice(n + 1));
    assert.equal(statuses(rest).at(-1), 'completed');
  });

  test('aborting the signal ends the iteration quietly', async () => {
    const id = await submit({ sleep: 300, steps: 3000 });
    const controller = new AbortController();
    const events = [];
    for await (const event of cli.streamJob({ token: admin, params: { id }, signal: controller.signal })) {
      events.push(event);
      controller.abort();
    }
    assert.equal(events.length, 1);
    assert.equal(events[0].event, 'status');
    await cli.abortJob({ token: admin, params: { id } });
  });

  test('a missing job, or an id the server did not write, rejects with the server body', async () => {
    const missing = cli.streamJob({ token: admin, params: { id: '6f0c2b1e-3d4a-4b5c-8d6e-7f8091a2b3c4' } });
    const notFound = await assert.rejects(missing.next(), (error) => {
      assert.ok(error instanceof NickJobsError);
      assert.equal(error.status, 404);
      assert.equal(error.type, 'Not found');
      return true;
    });
    assert.equal(notFound, undefined);
    const id = await submit({});
    await assert.rejects(
      cli.streamJob({ token: admin, params: { id }, lastEventId: 'nonsense' }).next(),
      (error) => error.status === 400 && error.message === 'Last-Event-ID is not an event id this service wrote.',
    );
    await assert.rejects(cli.streamJob({ params: { id } }).next(), (error) => error.status === 401);
  });

  test('a dropped connection is resumed with Last-Event-ID', async () => {
    const relay = await startRelay(new URL(server.url).port);
    try {
      const through = Client.initialize({ apiPath: relay.url });
      // A second a step: the stream, opened once the job runs, is cut before the end.
      const id = await submit({ sleep: 5, steps: 5 });
      await waitForStatus(id, ['running']);
      const events = [];
      for await (const event of through.streamJob({ token: admin, params: { id } })) {
        events.push(event);
        if (event.event === 'log' && relay.requests.length === 1) relay.cut();
      }
      const lines = messages(events);
      assert.deepEqual(lines, stepsDone(6 - lines.length, 5, 5)); // in order, each once
      assert.equal(statuses(events).at(-1), 'completed');
      assert.equal(relay.requests.length, 2);
      const sent = relay.requests[1].match(/\r\nlast-event-id: ([^\r]+)\r\n/i);
      assert.ok(sent, relay.requests[1]);
      assert.ok(events.some((e) => e.id === sent[1]), 'it resumed from an event it had');
    } finally {
      relay.close();
    }
  });
});

describe('streamJobs', () => {
  test('sends each change of the jobs from now on', { timeout: 60000 }, async () => {
    const controller = new AbortController();
    const stream = cli.streamJobs({ token: admin, signal: controller.signal });
    const next = async () => (await stream.next()).value;
    const events = [];
    try {
      // The stream connects while a first job runs: an event of that job means the stream
      // is live, so every change of the job submitted after it must come.
      const pending = next(); // connects, while the first job is submitted
      const warm = await submit({ sleep: 2, steps: 1 });
      let event = await pending;
      while (event.data.uuid !== warm) event = await next();
      const id = await submit({ sleep: 1, steps: 2 });
      do {
        event = await next();
        events.push(event);
      } while (!(event.data.uuid === id && event.data.status === 'completed'));
      assert.ok(events.every((e) => e.event === 'status' && /^\d+$/.test(e.id)));
      const mine = events.filter((e) => e.data.uuid === id).map((e) => e.data.status);
      assert.ok(mine.includes('running'), mine);
      assert.equal(mine.at(-1), 'completed');
    } finally {
      controller.abort();
    }
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

  test('a close that asks to reconnect is resumed without a gap', async () => {
    const short = Client.initialize({ apiPath: shortLived.url });
    const token = (await short.login({ data: { login: 'admin', password: USERS.admin } })).data.token;
    const { data: job } = await short.createJob({
      token,
      // A second a step: the stream is open for three lines and a lifetime before the end.
      data: { params: { action: 'dummy', sleep: 5, steps: 5 } },
    });
    const events = await collect(short.streamJob({ token, params: { id: job.uuid } }));
    const closes = events.filter((e) => e.event === 'close').map((e) => e.data);
    assert.deepEqual(closes[0], { reason: 'lifetime', reconnect: true });
    assert.deepEqual(closes.at(-1), { reason: 'finished', reconnect: false });
    const lines = messages(events);
    assert.deepEqual(lines, stepsDone(6 - lines.length, 5, 5));
    assert.ok(lines.length >= 3, lines);
    assert.equal(statuses(events).at(-1), 'completed');
  });
});
