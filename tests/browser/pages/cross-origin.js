// Scenarios of tests/browser/test_cross_origin.py: a page of one origin that calls the
// nick-jobs API of another. `?scenario=` picks one; the other parameters are its input.
import { client, progress, query, run, settle } from './harness.js';

const token = () => query.get('token');

function page(result) {
  return {
    status: result.status,
    uuids: result.data.map((job) => job.uuid),
    next: result.next,
    total: result.total,
  };
}

async function waitForJob(cli, uuid, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const { data } = await cli.getJob({ token: token(), params: { id: uuid } });
    if (['completed', 'failed', 'aborted'].includes(data.status)) return data;
    if (Date.now() > deadline) throw new Error(`job ${uuid} still ${data.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function createGated(cli) {
  const params = { action: 'gated', gate: query.get('gate'), before: 2, after: 3 };
  return cli.createJob({ token: token(), data: { params, title: query.get('title') } });
}

const EVENT_TYPES = ['status', 'progress', 'log', 'close'];

/**
 * The events of an EventSource, each `{ event, data, id }`, until `last(item)` says one
 * was the last: `opened` resolves when it opens, `first` at its first event, and
 * `events` with them all (it rejects when the EventSource fails, or after 30 s).
 */
function listen(source, last) {
  const seen = [];
  let opened;
  let first;
  const result = {
    opened: new Promise((resolve) => { opened = resolve; }),
    first: new Promise((resolve) => { first = resolve; }),
  };
  result.events = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      source.close();
      reject(new Error(`${source.url}: no last event in 30 s after ${JSON.stringify(seen)}`));
    }, 30000);
    source.addEventListener('open', () => opened());
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => {
        const item = { event: type, data: JSON.parse(event.data), id: event.lastEventId };
        seen.push(item);
        first();
        if (last(item)) {
          clearTimeout(timer);
          source.close();
          resolve(seen);
        }
      });
    }
    source.addEventListener('error', () => {
      if (source.readyState !== EventSource.CLOSED) return; // reconnecting by itself
      clearTimeout(timer);
      reject(new Error(`${source.url} failed after ${JSON.stringify(seen)}`));
    });
  });
  // Whatever rejects is reported where `events` is awaited.
  result.events.catch(() => {});
  return result;
}

/** The client's `eventSource` on one job: its events until the stream is over. */
function helperStream(cli, uuid) {
  const events = [];
  let opens = 0;
  let first;
  const firstEvent = new Promise((resolve) => { first = resolve; });
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 30000);
  const stream = cli.eventSource({
    kind: 'job',
    params: { id: uuid },
    // A function: asked again for each ticket.
    token: () => token(),
    signal: abort.signal,
    onOpen: () => { opens += 1; },
    onEvent: (event) => {
      events.push(event);
      first();
    },
  });
  const result = stream.done.then(() => {
    clearTimeout(timer);
    return { events, opens, timedOut: abort.signal.aborted, closed: stream.closed };
  });
  result.catch(() => {}); // reported where it is awaited
  return { first: firstEvent, result };
}

const scenarios = {
  /** Log in, list, submit a dummy job, read it back: all with the client's methods. */
  async jobs() {
    const cli = client();
    const login = await cli.login({
      data: { login: query.get('login'), password: query.get('password') },
    });
    query.set('token', login.data.token);
    const actions = await cli.getJobActions({ token: token() });
    const before = await cli.getJobs({ token: token(), query: { b_size: 1, count: true } });
    const created = await cli.createJob({
      token: token(),
      data: {
        params: { action: 'dummy', steps: 2, result: { from: 'the browser' } },
        title: query.get('title'),
      },
    });
    const finished = await waitForJob(cli, created.data.uuid);
    const read = await cli.getJob({ token: token(), params: { id: created.data.uuid } });
    const after = await cli.getJobs({ token: token(), query: { b_size: 1, count: true } });
    return {
      token: login.data.token,
      actions: actions.data.map((action) => action.name),
      before: page(before),
      created: {
        status: created.status,
        location: created.headers.get('Location'),
        job: created.data,
      },
      finished,
      read: read.data,
      after: page(after),
    };
  },

  /** The client's fetch-based stream of one job, with the Authorization header. */
  async stream() {
    const cli = client();
    const { data: job } = await createGated(cli);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 30000);
    const events = [];
    for await (const event of cli.streamJob({
      token: token(),
      params: { id: job.uuid },
      signal: abort.signal,
      reconnects: 0,
    })) {
      events.push(event);
      // The test opens the gate once the stream is known to be open.
      if (events.length === 1) progress('streaming');
    }
    clearTimeout(timer);
    return { uuid: job.uuid, events, timedOut: abort.signal.aborted };
  },

  /**
   * A ticket from POST /@stream-tickets, then a plain EventSource on its URL; beside it,
   * the client's helpers for EventSource on the same job: `streamUrl`, `jobsStreamUrl`
   * (the all-jobs stream) and `eventSource`. The test opens the gate once all are open.
   */
  async ticket() {
    const cli = client();
    const { data: job } = await createGated(cli);
    const answer = await fetch(`${query.get('api')}/@stream-tickets`, {
      method: 'POST',
      headers: {
        Accept: 'application/json',
        Authorization: `Bearer ${token()}`,
        'Content-Type': 'application/json',
      },
      body: JSON.stringify({ stream: `/@jobs/${job.uuid}/stream` }),
    });
    const ticket = await answer.json();
    if (!answer.ok) throw new Error(`POST /@stream-tickets: ${answer.status} ${JSON.stringify(ticket)}`);
    const finished = (item) => item.event === 'close' && !item.data.reconnect;
    const plain = listen(new EventSource(ticket.url), finished);

    const streamUrl = await cli.streamUrl({ token: token(), params: { id: job.uuid } });
    const viaStreamUrl = listen(new EventSource(streamUrl), finished);
    const jobsStreamUrl = await cli.jobsStreamUrl({ token: token() });
    const jobs = listen(
      new EventSource(jobsStreamUrl),
      (item) => item.event === 'status' && item.data.uuid === job.uuid && item.data.status === 'completed',
    );
    const helper = helperStream(cli, job.uuid);

    await Promise.all([plain.first, viaStreamUrl.first, jobs.opened, helper.first]);
    progress('streaming');
    return {
      uuid: job.uuid,
      ticket: { status: answer.status, url: ticket.url, expires: ticket.expires },
      withCredentials: false,
      events: await plain.events,
      helpers: {
        streamUrl: { url: streamUrl, events: await viaStreamUrl.events },
        jobsStreamUrl: { url: jobsStreamUrl, events: await jobs.events },
        eventSource: await helper.result,
      },
    };
  },

  /** The server's error bodies reach the page too: a wrong password, an unknown job. */
  async errors() {
    const cli = client();
    const login = await settle(
      cli.login({ data: { login: query.get('login'), password: query.get('password') } }),
    );
    const missing = await settle(
      cli.getJob({ token: token(), params: { id: '00000000-0000-4000-8000-000000000000' } }),
    );
    return { login, missing };
  },

  /** From an origin the API doesn't allow: every call rejects, and says so. */
  async refused() {
    const cli = client();
    const login = await settle(
      cli.login({ data: { login: query.get('login'), password: query.get('password') } }),
    );
    const create = await settle(
      cli.createJob({
        token: token(),
        data: { params: { action: 'dummy' }, title: query.get('title') },
      }),
    );
    const list = await settle(cli.getJobs({ token: token() }));
    const stream = await settle(
      (async () => {
        const events = [];
        for await (const event of cli.streamJob({
          token: token(),
          params: { id: query.get('job') },
          reconnects: 0,
        })) {
          events.push(event);
        }
        return events;
      })(),
    );
    // Settled values hold Headers, which JSON can't show: keep the status alone.
    const shown = (outcome) =>
      'resolved' in outcome ? { resolved: { status: outcome.resolved.status ?? null } } : outcome;
    return { login: shown(login), create: shown(create), list: shown(list), stream };
  },

  /** An EventSource on a ticket URL the test made: the browser must not open it here. */
  async refusedEventSource() {
    const outcome = await new Promise((resolve) => {
      const source = new EventSource(query.get('ticket_url'));
      const seen = [];
      for (const type of ['status', 'progress', 'log', 'close']) {
        source.addEventListener(type, (event) => seen.push({ event: type, data: event.data }));
      }
      source.addEventListener('open', () => seen.push({ event: 'open' }));
      source.addEventListener('error', () => {
        const closed = source.readyState === EventSource.CLOSED;
        source.close();
        resolve({ closed, events: seen });
      });
    });
    return outcome;
  },
};

run(scenarios);
