import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Client, { NickJobsError } from '../index.js';
import { USERS, startServer, waitForStatus as waitForJob, rejection } from '../testing/server.js';

let server;
let cli;
let admin;
let alice;

const FINAL = ['completed', 'failed', 'aborted'];

function waitForStatus(id, wanted, timeoutMs) {
  return waitForJob(cli, admin, id, wanted, timeoutMs);
}

function longJob(title = 'Long') {
  return cli.createJob({
    token: admin,
    data: { title, params: { action: 'dummy', sleep: 300, steps: 3000 } },
  });
}

before(async () => {
  server = await startServer();
  cli = Client.initialize({ apiPath: server.url });
  admin = (await cli.login({ data: { login: 'admin', password: USERS.admin } })).data.token;
  alice = (await cli.login({ data: { login: 'alice', password: USERS.alice } })).data.token;
});

after(async () => {
  await server?.stop();
});

describe('login', () => {
  test('returns a token in data', async () => {
    const result = await cli.login({ data: { login: 'admin', password: USERS.admin } });
    assert.equal(result.status, 200);
    assert.match(result.data.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  });

  test('a wrong password rejects with 401 and the server body', async () => {
    const error = await rejection(cli.login({ data: { login: 'admin', password: 'nope' } }));
    assert.ok(error instanceof NickJobsError);
    assert.equal(error.status, 401);
    assert.equal(error.type, 'Invalid credentials');
    assert.equal(error.message, 'Wrong login and/or password.');
    assert.deepEqual(error.body, {
      error: { type: 'Invalid credentials', message: 'Wrong login and/or password.' },
    });
  });

  test('loginRenew gives a working token; logout revokes it', async () => {
    const { data } = await cli.loginRenew({ token: admin });
    assert.ok(data.token);
    const own = (await cli.login({ data: { login: 'carol', password: USERS.carol } })).data.token;
    assert.equal((await cli.getJobActions({ token: own })).status, 200);
    const out = await cli.logout({ token: own });
    assert.equal(out.status, 204);
    assert.equal(out.data, null);
    const error = await rejection(cli.getJobActions({ token: own }));
    assert.equal(error.status, 401);
  });

  test('no token: 401 Unauthorized', async () => {
    const error = await rejection(cli.getJobs({}));
    assert.equal(error.status, 401);
    assert.equal(error.type, 'Unauthorized');
  });
});

describe('jobs', () => {
  test('createJob, then getJob until it completes', async () => {
    const created = await cli.createJob({
      token: admin,
      data: { title: 'The answer', params: { action: 'dummy', steps: 2, result: { answer: 42 } } },
    });
    assert.equal(created.status, 201);
    assert.equal(created.data.title, 'The answer');
    assert.equal(created.data.params.action, 'dummy');
    assert.equal(created.headers.get('Location'), created.data['@id']);
    const job = await waitForStatus(created.data.uuid, FINAL);
    assert.equal(job.status, 'completed');
    assert.deepEqual(job.result, { answer: 42 });
    assert.equal(job.attempt, 1);
  });

  test('an Idempotency-Key returns the first job again', async () => {
    const key = `js-${Date.now()}`;
    const data = { params: { action: 'dummy' } };
    const first = await cli.createJob({ token: admin, data, headers: { 'Idempotency-Key': key } });
    const again = await cli.createJob({ token: admin, data, headers: { 'Idempotency-Key': key } });
    assert.equal(first.status, 201);
    assert.equal(again.status, 200);
    assert.equal(again.data.uuid, first.data.uuid);
  });

  test('createJobs submits an array, all or none', async () => {
    const data = [1, 2, 3].map((n) => ({ title: `Bulk ${n}`, params: { action: 'dummy', result: { n } } }));
    const created = await cli.createJobs({ token: admin, data });
    assert.equal(created.status, 201);
    assert.deepEqual(created.data.map((job) => job.title), ['Bulk 1', 'Bulk 2', 'Bulk 3']);
    for (const [index, job] of created.data.entries()) {
      const done = await waitForStatus(job.uuid, FINAL);
      assert.deepEqual(done.result, { n: index + 1 });
    }
    const error = await rejection(
      cli.createJobs({ token: admin, data: [data[0], { params: { action: 'dummy', steps: -1 } }] }),
    );
    assert.equal(error.status, 400);
    assert.deepEqual(Object.keys(error.body.error.fields), ['1']);
    assert.throws(() => cli.createJobs({ token: admin, data: data[0] }), TypeError);
  });

  test('invalid params reject with 400 and the fields', async () => {
    const error = await rejection(
      cli.createJob({ token: admin, data: { params: { action: 'dummy', steps: -1 } } }),
    );
    assert.equal(error.status, 400);
    assert.equal(error.type, 'Validation error');
    assert.ok(error.body.error.fields.params.steps);
  });

  test('abortJob, retryJob and deleteJob', async () => {
    const { data: job } = await longJob();
    const id = job.uuid;
    const aborted = await cli.abortJob({ token: admin, params: { id } });
    assert.equal(aborted.status, 204);
    assert.equal((await cli.getJob({ token: admin, params: { id } })).data.status, 'aborted');

    const retried = await cli.retryJob({ token: admin, params: { id } });
    assert.equal(retried.status, 204);
    const again = await waitForStatus(id, ['created', 'running']);
    assert.equal(again.attempt, 2);

    await waitForStatus(id, ['running']);
    const conflict = await rejection(cli.deleteJob({ token: admin, params: { id } }));
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.error.status, 'running');

    await cli.abortJob({ token: admin, params: { id } });
    const deleted = await cli.deleteJob({ token: admin, params: { id } });
    assert.equal(deleted.status, 204);
    const gone = await rejection(cli.getJob({ token: admin, params: { id } }));
    assert.equal(gone.status, 404);
    assert.equal(gone.type, 'Not found');
  });

  test('aborting a finished job is a 409 with its status', async () => {
    const { data } = await cli.createJob({ token: admin, data: { params: { action: 'dummy' } } });
    await waitForStatus(data.uuid, ['completed']);
    const error = await rejection(cli.abortJob({ token: admin, params: { id: data.uuid } }));
    assert.equal(error.status, 409);
    assert.equal(error.message, "A completed job can't be aborted.");
    assert.equal(error.body.error.status, 'completed');
  });

  test("another user's job is a 404", async () => {
    const { data } = await cli.createJob({ token: admin, data: { params: { action: 'dummy' } } });
    const error = await rejection(cli.getJob({ token: alice, params: { id: data.uuid } }));
    assert.equal(error.status, 404);
  });

  test('getJobs filters, and pages with next', async () => {
    const marker = `page-${Date.now()}`;
    const ids = [];
    for (let i = 0; i < 3; i += 1) {
      const { data } = await cli.createJob({
        token: admin,
        data: { title: `${marker} ${i}`, params: { action: 'dummy' } },
      });
      ids.push(data.uuid);
    }
    const first = await cli.getJobs({ token: admin, query: { q: marker, b_size: 2 } });
    assert.deepEqual(
      first.data.map((job) => job.uuid),
      [ids[2], ids[1]],
    );
    assert.ok(first.next, 'a next link');
    const second = await cli.getJobs({ token: admin, url: first.next });
    assert.deepEqual(
      second.data.map((job) => job.uuid),
      [ids[0]],
    );
    assert.equal(second.next, null);

    const all = [];
    for await (const job of cli.iterJobs({ token: admin, query: { q: marker } })) all.push(job.uuid);
    assert.deepEqual(all, [...ids].reverse());
    const limited = [];
    for await (const job of cli.iterJobs({ token: admin, query: { q: marker }, limit: 1 })) {
      limited.push(job.uuid);
    }
    assert.deepEqual(limited, [ids[2]]);

    const counted = await cli.getJobs({ token: admin, query: { q: marker, count: true, b_size: 1 } });
    assert.equal(counted.total, 3);

    const mine = await cli.getJobs({ token: alice, query: { q: marker } });
    assert.deepEqual(mine.data, []);
  });

  test('an invalid filter is a 400', async () => {
    const error = await rejection(cli.getJobs({ token: admin, query: { status: 'done' } }));
    assert.equal(error.status, 400);
    assert.ok(error.body.error.fields.status);
  });
});

describe('actions and errors', () => {
  test('getJobActions lists what the user may submit', async () => {
    const { data } = await cli.getJobActions({ token: admin });
    assert.deepEqual(
      data.map((action) => action.name),
      ['dummy', 'prune'],
    );
    assert.equal(data[0].params.type, 'object');
    assert.deepEqual((await cli.getJobActions({ token: alice })).data, []);
  });

  test('getJobActions searches and pages', async () => {
    const found = await cli.getJobActions({ token: admin, query: { q: 'PRUN' } });
    assert.deepEqual(
      found.data.map((action) => action.name),
      ['prune'],
    );
    assert.equal(found.next, null);
    const first = await cli.getJobActions({ token: admin, query: { b_size: 1 } });
    assert.deepEqual(
      first.data.map((action) => action.name),
      ['dummy'],
    );
    assert.ok(first.next);
    const second = await cli.getJobActions({ token: admin, url: first.next });
    assert.deepEqual(
      second.data.map((action) => action.name),
      ['prune'],
    );
  });

  test('getJobs pages oldest first with sort', async () => {
    const oldest = await cli.getJobs({ token: admin, query: { sort: 'oldest', b_size: 2 } });
    const newest = await cli.getJobs({ token: admin, query: { b_size: 1000 } });
    const ids = newest.data.map((job) => job.uuid).reverse();
    assert.deepEqual(
      oldest.data.map((job) => job.uuid),
      ids.slice(0, 2),
    );
  });

  test('an unreachable server rejects with status 0', async () => {
    const closed = Client.initialize({ apiPath: 'http://127.0.0.1:9' });
    const error = await rejection(closed.getJobs({ token: admin }));
    assert.ok(error instanceof NickJobsError);
    assert.equal(error.status, 0);
    assert.match(error.message, /can't reach http:\/\/127\.0\.0\.1:9/);
  });

  test('a job id is required', async () => {
    await assert.rejects(cli.getJob({ token: admin, params: {} }), TypeError);
  });
});

describe('stop, resume, restart, log and history', () => {
  test('stopJob, then resumeJob goes on as a new attempt', async () => {
    const { data: job } = await longJob('Stop me');
    const id = job.uuid;
    await waitForStatus(id, ['running']);
    const stopped = await cli.stopJob({ token: admin, params: { id } });
    assert.equal(stopped.status, 204);
    assert.equal(stopped.data, null);
    assert.equal((await waitForStatus(id, ['stopped'])).attempt, 1);

    const again = await rejection(cli.stopJob({ token: admin, params: { id } }));
    assert.equal(again.status, 409);
    assert.equal(again.message, "A stopped job can't be stopped.");

    const resumed = await cli.resumeJob({ token: admin, params: { id } });
    assert.equal(resumed.status, 204);
    assert.equal((await waitForStatus(id, ['running'])).attempt, 2);
    const running = await rejection(cli.resumeJob({ token: admin, params: { id } }));
    assert.equal(running.status, 409);
    assert.equal(running.body.error.status, 'running');
    await cli.abortJob({ token: admin, params: { id } });
  });

  test("a job whose action can't resume can't be stopped", async () => {
    const { data } = await cli.createJob({ token: admin, data: { params: { action: 'prune' } } });
    await waitForStatus(data.uuid, ['completed']);
    const error = await rejection(cli.stopJob({ token: admin, params: { id: data.uuid } }));
    assert.equal(error.status, 409);
    assert.equal(error.type, 'Not resumable');
  });

  test('restartJob makes a new job with the old one as parent', async () => {
    const { data: old } = await cli.createJob({
      token: admin,
      data: { title: 'Restart me', params: { action: 'dummy', fail: 'disk full' } },
    });
    await waitForStatus(old.uuid, ['failed']);
    const restarted = await cli.restartJob({ token: admin, params: { id: old.uuid } });
    assert.equal(restarted.status, 201);
    assert.notEqual(restarted.data.uuid, old.uuid);
    assert.equal(restarted.data.parent, old.uuid);
    assert.equal(restarted.data.title, 'Restart me');
    assert.equal(restarted.headers.get('Location'), restarted.data['@id']);
    const { data: unchanged } = await cli.getJob({ token: admin, params: { id: old.uuid } });
    assert.equal(unchanged.status, 'failed');
  });

  test('getJobLog pages with next; iterJobLog follows them; level filters', async () => {
    const { data } = await cli.createJob({
      token: admin,
      data: { params: { action: 'dummy', steps: 3 } },
    });
    const id = data.uuid;
    await waitForStatus(id, ['completed']);
    // This server's default page size is 2.
    const first = await cli.getJobLog({ token: admin, params: { id } });
    assert.deepEqual(
      first.data.map((line) => line.message),
      ['step 1 of 3 done', 'step 2 of 3 done'],
    );
    assert.deepEqual(Object.keys(first.data[0]).sort(), ['attempt', 'level', 'message', 'time']);
    assert.ok(first.next);
    const second = await cli.getJobLog({ token: admin, url: first.next });
    assert.deepEqual(
      second.data.map((line) => line.message),
      ['step 3 of 3 done'],
    );
    assert.equal(second.next, null);

    const all = [];
    for await (const line of cli.iterJobLog({ token: admin, params: { id } })) all.push(line.message);
    assert.deepEqual(all, ['step 1 of 3 done', 'step 2 of 3 done', 'step 3 of 3 done']);

    const warnings = await cli.getJobLog({ token: admin, params: { id }, query: { level: 'warning' } });
    assert.deepEqual(warnings.data, []);
    const invalid = await rejection(
      cli.getJobLog({ token: admin, params: { id }, query: { level: 'loud' } }),
    );
    assert.equal(invalid.status, 400);
    assert.ok(invalid.body.error.fields.level);
  });

  test('getJobHistory lists what happened, in order', async () => {
    const { data } = await cli.createJob({
      token: admin,
      data: { params: { action: 'dummy', fail: 'disk full' } },
    });
    await waitForStatus(data.uuid, ['failed']);
    const { data: history, status } = await cli.getJobHistory({
      token: admin,
      params: { id: data.uuid },
    });
    assert.equal(status, 200);
    assert.deepEqual(
      history.map((event) => [event.event, event.by, event.attempt]),
      [
        ['created', 'admin', 1],
        ['started', 'worker', 1],
        ['failed', 'worker', 1],
      ],
    );
    assert.deepEqual(history[2].error, { type: 'JobFailed', message: 'disk full' });
    const hidden = await rejection(cli.getJobHistory({ token: alice, params: { id: data.uuid } }));
    assert.equal(hidden.status, 404);
  });
});

describe('scheduled jobs', () => {
  test('create, get, list, update and delete', async () => {
    const created = await cli.createScheduledJob({
      token: admin,
      data: {
        id: 'js-hourly',
        action: 'dummy',
        schedule: '0 * * * *',
        params: { steps: 2 },
        title: 'Hourly',
        timezone: 'Europe/Amsterdam',
      },
    });
    assert.equal(created.status, 201);
    assert.equal(created.headers.get('Location'), created.data['@id']);
    assert.deepEqual(
      [created.data.id, created.data.action, created.data.enabled, created.data.timezone],
      ['js-hourly', 'dummy', true, 'Europe/Amsterdam'],
    );
    assert.ok(created.data.next_run);

    const got = await cli.getScheduledJob({ token: admin, params: { id: 'js-hourly' } });
    assert.deepEqual(got.data, created.data);
    const list = await cli.getScheduledJobs({ token: admin });
    assert.ok(list.data.some((item) => item.id === 'js-hourly'));

    const updated = await cli.updateScheduledJob({
      token: admin,
      params: { id: 'js-hourly' },
      data: { enabled: false, params: { steps: 3 } },
    });
    assert.equal(updated.status, 200);
    assert.deepEqual(
      [updated.data.enabled, updated.data.next_run, updated.data.params, updated.data.schedule],
      [false, null, { steps: 3 }, '0 * * * *'],
    );
    const minimal = await cli.updateScheduledJob({
      token: admin,
      params: { id: 'js-hourly' },
      data: { title: 'Still hourly' },
      headers: { Prefer: 'return=minimal' },
    });
    assert.equal(minimal.status, 204);
    assert.equal(minimal.data, null);

    const deleted = await cli.deleteScheduledJob({ token: admin, params: { id: 'js-hourly' } });
    assert.equal(deleted.status, 204);
    const gone = await rejection(cli.getScheduledJob({ token: admin, params: { id: 'js-hourly' } }));
    assert.equal(gone.status, 404);
  });

  test('refusals carry the status and the server body', async () => {
    const data = { id: 'js-taken', action: 'dummy', schedule: '0 2 * * *' };
    await cli.createScheduledJob({ token: admin, data });
    const taken = await rejection(cli.createScheduledJob({ token: admin, data }));
    assert.equal(taken.status, 409);
    assert.equal(taken.message, "A scheduled job with the id 'js-taken' already exists.");
    const invalid = await rejection(
      cli.createScheduledJob({ token: admin, data: { ...data, id: 'js-bad', schedule: '0 2 * *' } }),
    );
    assert.equal(invalid.status, 400);
    assert.equal(invalid.type, 'Validation error');
    assert.ok(invalid.body.error.fields.schedule);
    const forbidden = await rejection(cli.getScheduledJobs({ token: alice }));
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.type, 'Forbidden');
    await assert.rejects(cli.getScheduledJob({ token: admin, params: {} }), TypeError);
    await cli.deleteScheduledJob({ token: admin, params: { id: 'js-taken' } });
  });

  test('getScheduledJobActions lists every action', async () => {
    const { data } = await cli.getScheduledJobActions({ token: admin });
    assert.deepEqual(
      data.map((action) => action.name),
      ['dummy', 'prune'],
    );
  });
});

describe('dashboard figures', () => {
  test('getStats counts the jobs the user may see, over a window of minutes', async () => {
    await cli.createJob({ token: admin, data: { params: { action: 'dummy' } } });
    const { data, status } = await cli.getStats({ token: admin, query: { minutes: 5 } });
    assert.equal(status, 200);
    assert.equal(data['@id'], `${server.url}/@jobs/@stats`);
    assert.equal(data.window, 5);
    const listed = await cli.getJobs({ token: admin, query: { count: true } });
    assert.ok(data.total > 0);
    assert.equal(data.total, listed.total);
    assert.equal(
      Object.values(data.counts).reduce((sum, n) => sum + n, 0),
      data.total,
    );
    assert.equal(data.finished_per_minute.length, 5);
    // Another user's figures are over their own jobs: alice has none.
    assert.equal((await cli.getStats({ token: alice })).data.total, 0);
    const invalid = await rejection(cli.getStats({ token: admin, query: { minutes: 0 } }));
    assert.equal(invalid.status, 400);
    assert.equal(invalid.type, 'Validation error');
  });

  test('previewSchedule gives the next firings of a rule in a zone', async () => {
    const query = { schedule: '30 2 * * 0', timezone: 'Europe/Amsterdam', count: 3 };
    const { data } = await cli.previewSchedule({ token: admin, query });
    assert.equal(data.schedule, '30 2 * * 0');
    assert.equal(data.timezone, 'Europe/Amsterdam');
    assert.equal(data.next.length, 3);
    const local = new Intl.DateTimeFormat('en-GB', {
      timeZone: 'Europe/Amsterdam',
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
    });
    for (const date of data.next) assert.equal(local.format(new Date(date)), 'Sun 02:30');
    const times = data.next.map((date) => Date.parse(date));
    assert.ok(times[0] > Date.now() && times[0] < times[1] && times[1] < times[2], data.next);
    const invalid = await rejection(
      cli.previewSchedule({ token: admin, query: { schedule: '0 2 * *' } }),
    );
    assert.equal(invalid.status, 400);
    assert.ok(invalid.body.error.fields.schedule);
    const forbidden = await rejection(cli.previewSchedule({ token: alice, query }));
    assert.equal(forbidden.status, 403);
  });
});
