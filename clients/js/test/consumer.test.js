// Remote actions and the consumer API: declaring an action, claiming its jobs by hand,
// and work() running them, against a live server.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Client, { JobAborted, JobStopped, NickJobsError } from '../index.js';
import { USERS, startServer, waitForStatus as waitForJob, rejection } from '../testing/server.js';

let server;
let cli;
let admin;
let worker;
let alice;

// The shortest lease the server allows: work() checks in every 5/3 seconds.
const LEASE = 5;

function action(overrides = {}) {
  return {
    title: 'Index a site',
    permission: 'Add Jobs',
    params: {
      type: 'object',
      properties: { site: { type: 'string' } },
      required: ['site'],
    },
    lease: LEASE,
    ...overrides,
  };
}

async function declare(name, overrides = {}) {
  await cli.putJobAction({ token: admin, params: { name }, data: action(overrides) });
}

async function submit(name, site = 'news') {
  const { data } = await cli.createJob({ token: admin, data: { params: { action: name, site } } });
  return data;
}

function waitForStatus(id, wanted, timeoutMs) {
  return waitForJob(cli, admin, id, wanted, timeoutMs);
}

/** A promise and its resolve, to hear from inside a handler. */
function signal() {
  let resolve;
  const promise = new Promise((ok) => {
    resolve = ok;
  });
  return { promise, resolve };
}

/** Settles as `promise` does, or rejects after `ms`: no test waits forever on a handler. */
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** work() on `actions` as the Worker user, with a controller to end it. */
function consume(actions, handler, options = {}) {
  const controller = new AbortController();
  const errors = [];
  const done = cli.work(actions, handler, {
    token: worker,
    // Short: stopping waits for the claim in flight.
    wait: 1,
    signal: controller.signal,
    onError: (error) => errors.push(error),
    ...options,
  });
  return {
    done,
    errors,
    async stop() {
      controller.abort();
      await within(done, 20000, 'work() ending');
    },
  };
}

const pause = (ms) => new Promise((ok) => setTimeout(ok, ms));

before(async () => {
  server = await startServer();
  cli = Client.initialize({ apiPath: server.url, timeout: 10000 });
  const login = async (name) =>
    (await cli.login({ data: { login: name, password: USERS[name] } })).data.token;
  [admin, worker, alice] = await Promise.all(['admin', 'worker', 'alice'].map(login));
});

after(async () => {
  await server?.stop();
});

describe('remote actions', () => {
  test('putJobAction declares one, then changes it; getJobAction and its versions', async () => {
    const params = { name: 'js-declared' };
    const created = await cli.putJobAction({ token: admin, params, data: action() });
    assert.equal(created.status, 201);
    assert.equal(created.data.name, 'js-declared');
    assert.equal(created.data.kind, 'remote');
    assert.equal(created.data.version, 1);
    assert.equal(created.data.lease, LEASE);

    const changed = await cli.putJobAction({
      token: admin,
      params,
      data: action({ title: 'Index a site again', version: 1 }),
    });
    assert.equal(changed.status, 200);
    assert.equal(changed.data.version, 2);
    const { data: got } = await cli.getJobAction({ token: alice, params });
    assert.equal(got.title, 'Index a site again');
    const { data: versions } = await cli.getJobActionVersions({ token: admin, params });
    assert.deepEqual(versions.map((v) => v.version), [2, 1]);

    // A change made from a version that is no longer the action's.
    const stale = await rejection(
      cli.putJobAction({ token: admin, params, data: action({ title: 'Late', version: 1 }) }),
    );
    assert.equal(stale.status, 409);
    const forbidden = await rejection(cli.putJobAction({ token: alice, params, data: action() }));
    assert.equal(forbidden.status, 403);

    assert.equal((await cli.deleteJobAction({ token: admin, params })).status, 204);
    const gone = await rejection(cli.getJobAction({ token: admin, params }));
    assert.equal(gone.status, 404);
    assert.throws(() => cli.getJobAction({ token: admin, params: {} }), TypeError);
  });
});

describe('the consumer API', () => {
  test('claimJobs gives a job with a lease; checkinJob, completeClaimedJob', async () => {
    await declare('js-by-hand', { result: { type: 'object', required: ['indexed'] } });
    const empty = await cli.claimJobs({ token: worker, data: { actions: ['js-by-hand'] } });
    assert.deepEqual(empty.data, []);
    const job = await submit('js-by-hand');
    const { data: claimed } = await cli.claimJobs({
      token: worker,
      data: { actions: ['js-by-hand'], limit: 5 },
    });
    assert.deepEqual(claimed.map((j) => j.uuid), [job.uuid]);
    const [{ lease }] = claimed;
    assert.equal(claimed[0].status, 'running');
    assert.ok(lease.id && lease.expires);

    const params = { id: job.uuid };
    const { data: answer } = await cli.checkinJob({
      token: worker,
      params,
      data: { lease, progress: { percent: 40, message: 'halfway' }, log: [{ message: 'hello' }] },
    });
    assert.equal(answer.lease.id, lease.id);
    assert.equal(answer.abort, false);
    assert.equal(answer.stop, false);

    const invalid = await rejection(
      cli.completeClaimedJob({ token: worker, params, data: { lease, result: { other: 1 } } }),
    );
    assert.equal(invalid.status, 400);
    assert.ok(invalid.body.error.fields.result);
    const wrong = await rejection(
      cli.completeClaimedJob({ token: worker, params, data: { lease: 'other', result: {} } }),
    );
    assert.equal(wrong.status, 409);
    assert.equal(wrong.type, 'Lease refused');
    assert.equal(wrong.body.error.status, 'running');

    const done = await cli.completeClaimedJob({
      token: worker,
      params,
      data: { lease: lease.id, result: { indexed: 7 } },
    });
    assert.equal(done.status, 204);
    const { data: finished } = await cli.getJob({ token: admin, params });
    assert.equal(finished.status, 'completed');
    assert.deepEqual(finished.result, { indexed: 7 });
    const { data: lines } = await cli.getJobLog({ token: admin, params, query: { b_size: 50 } });
    assert.ok(lines.some((line) => line.message === 'hello'));
    assert.throws(() => cli.checkinJob({ token: worker, params, data: {} }), TypeError);
  });

  test('failClaimedJob, releaseClaimedJob', async () => {
    await declare('js-fail-release');
    const first = await submit('js-fail-release', 'a');
    const second = await submit('js-fail-release', 'b');
    const { data: claimed } = await cli.claimJobs({
      token: worker,
      data: { actions: ['js-fail-release'], limit: 2 },
    });
    const lease = (id) => claimed.find((j) => j.uuid === id).lease.id;
    await cli.failClaimedJob({
      token: worker,
      params: { id: first.uuid },
      data: { lease: lease(first.uuid), error: { type: 'DiskFull', message: 'no room' } },
    });
    const failed = await waitForStatus(first.uuid, ['failed']);
    assert.deepEqual(failed.error, { type: 'DiskFull', message: 'no room' });
    await cli.releaseClaimedJob({
      token: worker,
      params: { id: second.uuid },
      data: { lease: lease(second.uuid) },
    });
    const back = await waitForStatus(second.uuid, ['created']);
    assert.equal(back.attempt, 2);
  });

  test('completeJobs completes a batch, with an outcome for each job', async () => {
    await declare('js-batch', { result: { type: 'object', required: ['indexed'] } });
    const jobs = [];
    for (const site of ['a', 'b', 'c']) jobs.push(await submit('js-batch', site));
    const { data: claimed } = await cli.claimJobs({
      token: worker,
      data: { actions: ['js-batch'], limit: 3 },
    });
    assert.deepEqual(claimed.map((j) => j.uuid), jobs.map((j) => j.uuid));
    const [first, second, third] = claimed;
    const { status, data: outcomes } = await cli.completeJobs({
      token: worker,
      data: [
        { uuid: first.uuid, lease: first.lease, result: { indexed: 1 } },
        { uuid: second.uuid, lease: 'not the lease', result: { indexed: 2 } },
        { uuid: third.uuid, lease: third.lease.id, result: { other: 3 } },
      ],
    });
    assert.equal(status, 200);
    assert.deepEqual(outcomes[0], { uuid: first.uuid, completed: true });
    assert.equal(outcomes[1].uuid, second.uuid);
    assert.equal(outcomes[1].error.type, 'Lease refused');
    assert.equal(outcomes[1].error.status, 'running');
    assert.equal(outcomes[2].error.type, 'Validation error');
    assert.ok(outcomes[2].error.fields.result.indexed);
    const jobOf = async (uuid) => (await cli.getJob({ token: admin, params: { id: uuid } })).data;
    const done = await jobOf(first.uuid);
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.result, { indexed: 1 });
    assert.equal((await jobOf(second.uuid)).status, 'running');
    assert.equal((await jobOf(third.uuid)).status, 'running');

    const invalid = await rejection(cli.completeJobs({ token: worker, data: [] }));
    assert.equal(invalid.status, 400);
    assert.throws(() => cli.completeJobs({ token: worker, data: {} }), TypeError);
  });

  test('a claim that waits outlasts the client timeout it would not fit in', async () => {
    await declare('js-long-poll');
    const quick = Client.initialize({ apiPath: server.url, timeout: 200 });
    const started = Date.now();
    const { data } = await quick.claimJobs({
      token: worker,
      data: { actions: ['js-long-poll'], wait: 1 },
    });
    assert.deepEqual(data, []);
    assert.ok(Date.now() - started >= 1000);
  });

  test('only a Worker or an Administrator claims', async () => {
    await declare('js-who-claims');
    const data = { actions: ['js-who-claims'] };
    const error = await rejection(cli.claimJobs({ token: alice, data }));
    assert.equal(error.status, 403);
  });
});

describe('work()', () => {
  test('runs jobs and completes them with what the handler returns', async () => {
    await declare('js-work');
    const jobs = await Promise.all(['a', 'b', 'c'].map((site) => submit('js-work', site)));
    const consumer = consume(['js-work'], async (job, ctx) => {
      ctx.progress(50, `indexing ${job.params.site}`);
      ctx.log(`indexed ${job.params.site}`);
      ctx.log('a warning', 'warning');
      return { site: job.params.site, attempt: job.attempt };
    });
    try {
      for (const [index, job] of jobs.entries()) {
        const done = await waitForStatus(job.uuid, ['completed', 'failed']);
        assert.equal(done.status, 'completed');
        assert.deepEqual(done.result, { site: 'abc'[index], attempt: 1 });
        assert.equal(done.progress.percent, 50);
        assert.equal(done.progress.message, `indexing ${'abc'[index]}`);
        const { data: lines } = await cli.getJobLog({ token: admin, params: { id: job.uuid } });
        assert.deepEqual(
          lines.map((line) => [line.level, line.message]),
          [
            ['info', `indexed ${'abc'[index]}`],
            ['warning', 'a warning'],
          ],
        );
      }
    } finally {
      await consumer.stop();
    }
    assert.deepEqual(consumer.errors, []);
  });

  test('a thrown error fails the job, its name the type', async () => {
    await declare('js-work-fail');
    class QuotaExceeded extends Error {
      name = 'QuotaExceeded';
    }
    const job = await submit('js-work-fail');
    const consumer = consume(['js-work-fail'], async () => {
      throw new QuotaExceeded('over the quota');
    });
    try {
      const failed = await waitForStatus(job.uuid, ['completed', 'failed']);
      assert.equal(failed.status, 'failed');
      assert.deepEqual(failed.error, { type: 'QuotaExceeded', message: 'over the quota' });
    } finally {
      await consumer.stop();
    }
  });

  test('a result that does not fit the schema fails the job, saying why', async () => {
    await declare('js-work-bad-result', { result: { type: 'object', required: ['indexed'] } });
    const job = await submit('js-work-bad-result');
    const consumer = consume(['js-work-bad-result'], async () => ({ other: 1 }));
    try {
      const failed = await waitForStatus(job.uuid, ['completed', 'failed']);
      assert.equal(failed.status, 'failed');
      assert.equal(failed.error.type, 'InvalidResult');
      assert.match(failed.error.message, /indexed/);
    } finally {
      await consumer.stop();
    }
  });

  test('progress and log lines reach the server within seconds, not a lease later', async () => {
    // A long lease: its checkins come every 100 s, but reports go within a second.
    await declare('js-work-reports', { lease: 300 });
    const job = await submit('js-work-reports');
    const release = signal();
    const consumer = consume(['js-work-reports'], async (_, ctx) => {
      ctx.progress(30, 'a third of the way');
      ctx.log('first batch done');
      await within(release.promise, 30000, 'the test');
      return {};
    });
    try {
      const deadline = Date.now() + 10000;
      let running;
      for (;;) {
        ({ data: running } = await cli.getJob({ token: admin, params: { id: job.uuid } }));
        if (running.progress) break;
        assert.ok(Date.now() < deadline, 'the progress never reached the server');
        await pause(50);
      }
      assert.equal(running.status, 'running');
      assert.deepEqual(running.progress, { percent: 30, message: 'a third of the way' });
      const { data: lines } = await cli.getJobLog({ token: admin, params: { id: job.uuid } });
      assert.deepEqual(lines.map((line) => line.message), ['first batch done']);
    } finally {
      release.resolve();
      await waitForStatus(job.uuid, ['completed']);
      await consumer.stop();
    }
    assert.deepEqual(consumer.errors, []);
  });

  test('an abort reaches ctx.check() and ctx.signal', async () => {
    await declare('js-work-abort');
    const job = await submit('js-work-abort');
    const heard = signal();
    const consumer = consume(['js-work-abort'], async (_, ctx) => {
      try {
        for (;;) {
          ctx.check();
          await pause(20); // the work between checks
        }
      } catch (error) {
        heard.resolve({ error, signalReason: ctx.signal.reason });
        throw error;
      }
    });
    try {
      await waitForStatus(job.uuid, ['running']);
      await cli.abortJob({ token: admin, params: { id: job.uuid } });
      const { error, signalReason } = await within(heard.promise, 10000, 'the abort');
      assert.ok(error instanceof JobAborted);
      assert.equal(error.name, 'JobAborted');
      assert.equal(error.reason, 'aborted');
      assert.equal(signalReason, error);
      await waitForStatus(job.uuid, ['aborted']);
    } finally {
      await consumer.stop();
    }
    assert.deepEqual(consumer.errors, []);
  });

  test('a lease that no longer holds the job ends it with JobAborted, reason lost', async () => {
    await declare('js-work-lost');
    const job = await submit('js-work-lost');
    const heard = signal();
    const consumer = consume(['js-work-lost'], async (claimed, ctx) => {
      if (claimed.attempt > 1) return { attempt: claimed.attempt };
      // Handed back behind work()'s back: the next checkin is refused.
      await cli.releaseClaimedJob({
        token: worker,
        params: { id: claimed.uuid },
        data: { lease: claimed.lease },
      });
      try {
        for (;;) {
          ctx.check();
          await pause(20);
        }
      } catch (error) {
        heard.resolve(error);
        throw error;
      }
    });
    try {
      const error = await within(heard.promise, 10000, 'the refused checkin');
      assert.ok(error instanceof JobAborted);
      assert.equal(error.reason, 'lost');
      // Its failure was not reported: the next attempt, claimed again, completed.
      const done = await waitForStatus(job.uuid, ['completed', 'failed']);
      assert.equal(done.status, 'completed');
      assert.deepEqual(done.result, { attempt: 2 });
    } finally {
      await consumer.stop();
    }
  });

  test('a stop ends it stopped with its checkpoint; resumed, it comes back', async () => {
    await declare('js-work-stop', { resumable: true });
    const job = await submit('js-work-stop');
    const consumer = consume(['js-work-stop'], async (_, ctx) => {
      if (ctx.checkpoint) return { resumedFrom: ctx.checkpoint };
      ctx.saveCheckpoint({ batch: 3 });
      for (;;) {
        ctx.check(); // throws JobStopped: stopped, with the checkpoint
        await pause(20);
      }
    });
    try {
      await waitForStatus(job.uuid, ['running']);
      await cli.stopJob({ token: admin, params: { id: job.uuid } });
      await waitForStatus(job.uuid, ['stopped']);
      await cli.resumeJob({ token: admin, params: { id: job.uuid } });
      const resumed = await waitForStatus(job.uuid, ['completed', 'failed']);
      assert.equal(resumed.status, 'completed');
      assert.deepEqual(resumed.result, { resumedFrom: { batch: 3 } });
      assert.equal(resumed.attempt, 2);
    } finally {
      await consumer.stop();
    }
    assert.deepEqual(consumer.errors, []);
  });

  test('runs up to concurrency jobs at once', async () => {
    await declare('js-work-concurrency');
    const sites = ['a', 'b', 'c'];
    const jobs = await Promise.all(sites.map((site) => submit('js-work-concurrency', site)));
    let active = 0;
    let most = 0;
    const pair = signal();
    const consumer = consume(
      ['js-work-concurrency'],
      async () => {
        active += 1;
        most = Math.max(most, active);
        if (active === 2) pair.resolve();
        // The first two wait for each other: both run at once.
        await within(pair.promise, 10000, 'a second job running');
        active -= 1;
        return {};
      },
      { concurrency: 2 },
    );
    try {
      for (const job of jobs) {
        const done = await waitForStatus(job.uuid, ['completed', 'failed']);
        assert.equal(done.status, 'completed');
      }
      assert.equal(most, 2);
    } finally {
      await consumer.stop();
    }
  });

  test('jobs that end together are completed together, each with its own outcome', async () => {
    const result = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
    await declare('js-work-together', { result });
    const n = 20;
    const jobs = await Promise.all(
      Array.from({ length: n }, (_, k) => submit('js-work-together', String(k))),
    );
    const completes = [];
    const counted = Client.initialize({
      apiPath: server.url,
      timeout: 10000,
      fetch: (url, init) => {
        if (String(url).endsWith('complete')) completes.push(new URL(url).pathname);
        return fetch(url, init);
      },
    });
    const all = signal();
    let running = 0;
    const controller = new AbortController();
    const errors = [];
    const done = counted.work(
      ['js-work-together'],
      async (job) => {
        running += 1;
        if (running === n) all.resolve();
        await within(all.promise, 20000, `all ${n} jobs running`);
        const k = Number(job.params.site);
        // 3's result breaks the schema; 7's is no JSON (a BigInt): each fails alone.
        if (k === 3) return { n: 'many' };
        if (k === 7) return { n: 10n };
        return { n: k };
      },
      {
        token: worker,
        wait: 1,
        concurrency: n,
        signal: controller.signal,
        onError: (error) => errors.push(error),
      },
    );
    try {
      for (const [k, job] of jobs.entries()) {
        const ended = await waitForStatus(job.uuid, ['completed', 'failed']);
        if (k === 3 || k === 7) {
          assert.equal(ended.status, 'failed');
          assert.equal(ended.error.type, k === 3 ? 'InvalidResult' : 'TypeError');
        } else {
          assert.equal(ended.status, 'completed');
          assert.deepEqual(ended.result, { n: k });
        }
      }
    } finally {
      controller.abort();
      await within(done, 20000, 'work() ending');
    }
    assert.deepEqual(errors, []);
    assert.ok(completes.length > 0);
    assert.ok(completes.every((path) => path.endsWith('/@jobs/@complete')), String(completes));
    // 19 completions were sent (7's could not be): a few requests carried them all.
    assert.ok(completes.length <= 9, `${completes.length} complete requests`);
  });

  test('an aborted signal: a handler ends within grace, the rest are handed back', async () => {
    await declare('js-work-shutdown');
    const quick = await submit('js-work-shutdown', 'quick');
    const slow = await submit('js-work-shutdown', 'slow');
    const controller = new AbortController();
    const released = signal();
    const bothRunning = signal();
    let running = 0;
    const done = cli.work(
      ['js-work-shutdown'],
      async (job, ctx) => {
        running += 1;
        if (running === 2) bothRunning.resolve();
        if (job.params.site === 'quick') {
          // Ends once the consumer shuts down: within the grace.
          await within(
            new Promise((ok) => controller.signal.addEventListener('abort', ok, { once: true })),
            20000,
            'the shutdown',
          );
          return { finished: true };
        }
        // Never ends by itself: handed back when the grace is over.
        await new Promise((ok) => ctx.signal.addEventListener('abort', ok, { once: true }));
        released.resolve(ctx.signal.reason);
        return { finished: true };
      },
      { token: worker, concurrency: 2, wait: 2, grace: 300, signal: controller.signal },
    );
    // Both handlers run (a job the server shows running may still be in the claim's
    // answer, on its way: a stop then hands it back without running it).
    await within(bothRunning.promise, 20000, 'both handlers running');
    controller.abort();
    await within(done, 20000, 'work() ending');
    const reason = await within(released.promise, 1000, 'the release');
    assert.ok(reason instanceof JobAborted);
    assert.equal(reason.reason, 'released');

    const finished = await waitForStatus(quick.uuid, ['completed', 'failed']);
    assert.deepEqual(finished.result, { finished: true });
    const back = await waitForStatus(slow.uuid, ['created']);
    assert.equal(back.attempt, 2);
    // The handler's late return reports nothing: the job stays handed back.
    const { data: history } = await cli.getJobHistory({ token: admin, params: { id: slow.uuid } });
    assert.deepEqual(history.map((event) => event.event), ['created', 'started', 'handed back']);
  });

  test('a job a waiting claim brings after the signal aborted is handed back', async () => {
    await declare('js-work-late');
    const claiming = signal();
    const watched = Client.initialize({
      apiPath: server.url,
      fetch: (url, init) => {
        if (String(url).endsWith('/@claim')) claiming.resolve();
        return fetch(url, init);
      },
    });
    const controller = new AbortController();
    let ran = false;
    const done = watched.work(
      ['js-work-late'],
      async () => {
        ran = true;
        return {};
      },
      { token: worker, wait: 5, signal: controller.signal },
    );
    await within(claiming.promise, 10000, 'a claim');
    controller.abort();
    // The claim still waits on the server, and takes this job.
    const job = await submit('js-work-late');
    await within(done, 20000, 'work() ending');
    const back = await waitForStatus(job.uuid, ['created']);
    assert.equal(back.attempt, 2);
    assert.equal(ran, false);
  });

  test('a refused claim ends work() with its error', async () => {
    await declare('js-work-refused');
    const error = await rejection(
      within(cli.work(['js-work-refused'], async () => ({}), { token: alice }), 10000, 'work()'),
    );
    assert.ok(error instanceof NickJobsError);
    assert.equal(error.status, 403);
    assert.throws(() => cli.work([], async () => ({}), { token: worker }), TypeError);
    assert.throws(() => cli.work(['x'], async () => ({}), { token: worker, wait: 60 }), TypeError);
  });

  test('JobStopped and JobAborted are errors with their names', () => {
    assert.equal(new JobStopped().name, 'JobStopped');
    assert.ok(new JobAborted() instanceof Error);
    assert.equal(new JobAborted('x', { reason: 'lost' }).reason, 'lost');
  });
});
