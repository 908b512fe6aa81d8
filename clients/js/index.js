/**
 * A client for the nick-jobs `/@jobs` API (see docs/api.md), with the method names of
 * Nick's client. No dependencies: it needs only a global `fetch` (browsers, Node 18+).
 *
 *   import Client from 'nick-jobs-client';
 *   const cli = Client.initialize({ apiPath: 'http://localhost:8080' });
 *   const { data } = await cli.login({ data: { login: 'admin', password: 'admin' } });
 *   const jobs = await cli.getJobs({ token: data.token, query: { status: 'running' } });
 *
 * In a page, `apiPath` may be a path (`''`, `'/api'`), read against the page's location.
 *
 * Every method resolves to `{ data, status, headers }`; `getJobs` and `getJobLog` add
 * `next` for paging. A failure rejects with a `NickJobsError` carrying `status` (0 when
 * no answer came back) and `body`, the server's JSON error body. Every method takes a
 * `signal` (AbortSignal) and a `timeout` (ms; the client's own `timeout` by default).
 *
 * `streamJob` and `streamJobs` are async iterators over a job's Server-Sent Events, read
 * with fetch (so they can send the Authorization header, which EventSource can't), and
 * resumed with Last-Event-ID when the connection drops. For a page's `EventSource`,
 * `streamUrl`, `jobsStreamUrl` and `logStreamUrl` give a stream's URL with a ticket, and
 * `eventSource` keeps one open across expired tickets.
 *
 * Remote actions (`putJobAction`) have their jobs run by consumers over HTTP: `claimJobs`,
 * `checkinJob` and the `...ClaimedJob` calls are the consumer API, and `work()` runs a
 * handler on each claimed job, checking in, completing, failing, stopping or handing
 * back (in Node).
 */

export const DEFAULT_API_PATH = 'http://localhost:8080';

export class NickJobsError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, body?: any, method?: string, url?: string, cause?: unknown,
   *   retryAfter?: number | null, code?: 'timeout' | 'network' | null}} [details]
   */
  constructor(
    message,
    { status = 0, body = null, method, url, cause, retryAfter = null, code = null } = {},
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NickJobsError';
    this.status = status;
    this.body = body;
    this.method = method;
    this.url = url;
    /** Seconds from a `Retry-After` header (429, 503), or null. */
    this.retryAfter = retryAfter;
    /** Why no answer came back: 'timeout', 'network' (or CORS, in a page), else null. */
    this.code = code;
  }

  /** The error's `type` ("Not found", "Invalid state", ...) when the server sent one. */
  get type() {
    return this.body?.error?.type ?? null;
  }
}

// A URL with a scheme ("http://...", also "localhost:8080", which is not one that works).
const ABSOLUTE = /^[a-z][a-z\d+.-]*:/i;

/** The page's URL (window or worker), or null outside one (Node). */
function pageLocation() {
  const href = globalThis.location?.href;
  return typeof href === 'string' && href ? href : null;
}

function relativeApiPath(apiPath) {
  return new TypeError(
    `apiPath ${JSON.stringify(apiPath)} is relative, and there is no page location ` +
      '(globalThis.location) to resolve it against: outside a browser, give an absolute ' +
      "URL such as 'http://localhost:8080'",
  );
}

function checkTimeout(value, name = 'timeout') {
  if (value === undefined || value === null) return value;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new TypeError(`${name} is a number of milliseconds (0 or Infinity: none), not ${value}`);
  }
  return value;
}

function timedOut(method, href, ms) {
  return new NickJobsError(`${method} ${href} timed out after ${ms} ms`, {
    method,
    url: href,
    code: 'timeout',
  });
}

/**
 * A fetch that failed without an answer. In a page, a cross-origin request the browser
 * refused (CORS) fails the same way as a network failure, with nothing to tell them apart.
 */
function networkError(cause, method, href) {
  const detail = cause?.cause?.code ?? cause?.cause?.message ?? cause?.message ?? String(cause);
  let message = `can't reach ${href} (${method}: ${detail}): the network or the server may be down`;
  const page = pageLocation();
  if (page) {
    const origin = new URL(page).origin;
    if (new URL(href).origin !== origin) {
      message +=
        ', or the browser refused the cross-origin request (CORS): the server must allow ' +
        `the origin ${origin}`;
    }
  }
  return new NickJobsError(message, { method, url: href, cause, code: 'network' });
}

/**
 * The signal one call hands to fetch: aborted with the caller's `signal`, or with the
 * timeout's NickJobsError after `ms`. `run(promise)` settles as the promise does, or
 * rejects at once when either comes, even with a fetch that ignores signals.
 */
class Deadline {
  constructor(signal, ms, onTimeout) {
    this.outer = signal ?? null;
    const limited = typeof ms === 'number' && ms > 0 && Number.isFinite(ms);
    if (!limited && !signal) return;
    const controller = new AbortController();
    this.signal = controller.signal;
    this.stopped = new Promise((_, reject) => {
      this.reject = reject;
    });
    this.stopped.catch(() => {});
    const stop = (reason) => {
      controller.abort(reason);
      this.reject(reason);
    };
    if (limited) this.timer = setTimeout(() => stop(onTimeout()), ms);
    if (signal) {
      this.forward = () => stop(signal.reason);
      if (signal.aborted) this.forward();
      else signal.addEventListener('abort', this.forward, { once: true });
    }
  }

  run(promise) {
    if (!this.stopped) return promise;
    promise.catch(() => {}); // it may reject after the race is lost
    return Promise.race([promise, this.stopped]);
  }

  /** The answer came: no more timeout (the caller's signal still aborts). */
  settle() {
    clearTimeout(this.timer);
  }

  release() {
    clearTimeout(this.timer);
    if (this.forward) this.outer.removeEventListener('abort', this.forward);
  }
}

/** The `signal` and `timeout` of a method's options, for `request`. */
function callOptions(options) {
  return { signal: options?.signal, timeout: options?.timeout };
}

function nextLink(header) {
  if (!header) return null;
  for (const part of header.split(',')) {
    const match = part.match(/<([^>]*)>\s*;\s*rel="?next"?/);
    if (match) return match[1];
  }
  return null;
}

function jobPath(params) {
  const id = params?.id ?? params?.uuid;
  if (!id || typeof id !== 'string') {
    throw new TypeError('params.id (the job uuid) is required');
  }
  return `/@jobs/${encodeURIComponent(id)}`;
}

function actionPath(params) {
  const name = params?.name;
  if (!name || typeof name !== 'string') {
    throw new TypeError('params.name (the action name) is required');
  }
  return `/@job-actions/${encodeURIComponent(name)}`;
}

function scheduledJobPath(params) {
  const id = params?.id;
  if (!id || typeof id !== 'string') {
    throw new TypeError('params.id (the scheduled job id) is required');
  }
  return `/@scheduled-jobs/${encodeURIComponent(id)}`;
}

function retryAfter(headers) {
  const value = Number(headers.get('Retry-After') ?? NaN);
  return Number.isFinite(value) ? value : null;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * An incremental `text/event-stream` parser, as the HTML standard describes it: feed it
 * the bytes (Uint8Array) or text as they arrive; it returns the events each chunk
 * completes, as `{ event, data, id }` (`data` is the text; `id` the event's own `id:`
 * field, or null). Lines may end with CRLF, LF or CR, and chunks may split anywhere.
 * `lastEventId`, `retry` (ms) and `comments` (keepalives seen) are kept as EventSource
 * keeps them.
 */
export class SSEParser {
  constructor(lastEventId = '') {
    this.lastEventId = lastEventId;
    this.retry = null;
    this.comments = 0;
    this.reset();
  }

  /** Forget a half-received event (a new connection); lastEventId and retry stay. */
  reset() {
    this.decoder = new TextDecoder('utf-8');
    this.buffer = '';
    this.afterCR = false;
    this.started = false;
    this.type = '';
    this.data = [];
    this.id = null;
  }

  feed(chunk) {
    let text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    if (!text) return [];
    if (this.afterCR) {
      // The previous chunk ended with CR: an LF here is the rest of that line end.
      this.afterCR = false;
      if (text.startsWith('\n')) text = text.slice(1);
    }
    const buffer = this.buffer + text;
    const events = [];
    const ends = /\r\n|\r|\n/g;
    let start = 0;
    let match;
    while ((match = ends.exec(buffer)) !== null) {
      if (match[0] === '\r' && ends.lastIndex === buffer.length) this.afterCR = true;
      this.line(buffer.slice(start, match.index), events);
      start = ends.lastIndex;
    }
    this.buffer = buffer.slice(start);
    return events;
  }

  line(text, events) {
    if (!this.started) {
      this.started = true;
      if (text.startsWith('\ufeff')) text = text.slice(1);
    }
    if (text === '') {
      if (this.data.length) {
        events.push({ event: this.type || 'message', data: this.data.join('\n'), id: this.id });
      }
      this.type = '';
      this.data = [];
      this.id = null;
      return;
    }
    if (text.startsWith(':')) {
      this.comments += 1;
      return;
    }
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') {
      if (!value.includes('\0')) this.id = this.lastEventId = value;
    } else if (field === 'retry' && /^[0-9]+$/.test(value)) this.retry = Number(value);
  }
}

function decodeData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export class Client {
  #relative;

  /**
   * @param {{apiPath?: string, fetch?: typeof fetch, timeout?: number}} [options]
   */
  constructor({ apiPath = DEFAULT_API_PATH, fetch: fetchImpl, timeout } = {}) {
    if (typeof apiPath !== 'string') {
      throw new TypeError(`apiPath is a URL, or a path in a page ('/api'), not ${typeof apiPath}`);
    }
    this.apiPath = apiPath.replace(/\/+$/, '');
    this.#relative = !ABSOLUTE.test(this.apiPath);
    if (this.#relative) {
      if (!pageLocation()) throw relativeApiPath(apiPath);
    } else {
      let protocol = null;
      try {
        protocol = new URL(this.apiPath).protocol;
      } catch {
        // not a URL: said below
      }
      if (protocol !== 'http:' && protocol !== 'https:') {
        throw new TypeError(
          `apiPath ${JSON.stringify(apiPath)} is not an http(s) URL nor a path: ` +
            "give one such as 'http://localhost:8080', or '/api' in a page",
        );
      }
    }
    /** Milliseconds a call may take (until its answer is read); null: no limit. */
    this.timeout = checkTimeout(timeout) ?? null;
    this.fetch = fetchImpl ?? globalThis.fetch?.bind(globalThis);
    if (!this.fetch) throw new TypeError('no fetch: pass one as Client.initialize({ fetch })');
  }

  /** As in Nick's client: `Client.initialize({ apiPath })` returns a client. */
  static initialize(options = {}) {
    return new Client(options);
  }

  /**
   * One request. `path` is a path under apiPath, or a URL this server handed out
   * (a `Link: rel="next"`), of which only the path and query are used. `signal` aborts
   * it (rejecting with the signal's reason); after `timeout` ms (default: the client's)
   * it rejects with a NickJobsError whose `code` is 'timeout'.
   */
  async request(method, path, { token, query, data, headers, signal, timeout } = {}) {
    const url = this.url(path, query);
    const href = url.href;
    const sent = { Accept: 'application/json', ...(headers ?? {}) };
    if (token) sent.Authorization = `Bearer ${token}`;
    let body;
    if (data !== undefined) {
      sent['Content-Type'] = 'application/json';
      body = JSON.stringify(data);
    }
    const limit = this.timeoutFor(timeout);
    const deadline = new Deadline(signal, limit, () => timedOut(method, href, limit));
    let response;
    let text;
    try {
      response = await deadline.run(
        this.fetch(href, { method, headers: sent, body, signal: deadline.signal }),
      );
      text = await deadline.run(response.text());
    } catch (cause) {
      if (cause instanceof NickJobsError || signal?.aborted) throw cause;
      throw networkError(cause, method, href);
    } finally {
      deadline.release();
    }
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    if (!response.ok) throw this.failure(response, parsed, method, href);
    return { data: parsed, status: response.status, headers: response.headers };
  }

  /** A call's timeout in ms, or null: its own when given (null, 0: none), else the client's. */
  timeoutFor(timeout) {
    const ms = timeout === undefined ? this.timeout : checkTimeout(timeout);
    return ms > 0 && Number.isFinite(ms) ? ms : null;
  }

  /** The absolute URL of `path` under apiPath; a relative apiPath is read against the page. */
  resolve(path) {
    if (!this.#relative) return new URL(this.apiPath + path);
    const page = pageLocation();
    if (!page) throw relativeApiPath(this.apiPath);
    return new URL(this.apiPath + path, page);
  }

  url(path, query) {
    let url;
    if (/^https?:\/\//.test(path)) {
      const given = new URL(path);
      url = this.resolve('');
      url.pathname = given.pathname;
      url.search = given.search;
      url.hash = '';
    } else {
      url = this.resolve(path);
    }
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.append(key, String(value));
    }
    return url;
  }

  failure(response, parsed, method, href) {
    const message =
      parsed?.error?.message ?? `HTTP ${response.status} ${response.statusText}`.trim();
    return new NickJobsError(message, {
      status: response.status,
      body: parsed,
      method,
      url: href,
      retryAfter: retryAfter(response.headers),
    });
  }

  // --- authentication -------------------------------------------------------------------

  /** `POST /@login`: resolves to `{ data: { token } }`. */
  login(options = {}) {
    return this.request('POST', '/@login', { data: options.data, ...callOptions(options) });
  }

  /** `POST /@login-renew`: a fresh token for a valid one. */
  loginRenew(options = {}) {
    return this.request('POST', '/@login-renew', { token: options.token, ...callOptions(options) });
  }

  /** `POST /@logout`: revokes the token. */
  logout(options = {}) {
    return this.request('POST', '/@logout', { token: options.token, ...callOptions(options) });
  }

  // --- jobs ------------------------------------------------------------------------------

  /**
   * `GET /@jobs`, newest first. `query` takes status, action, actor, q, parent, b_size,
   * cursor and count. The result adds `next` (the next page's URL, or null) and `total`
   * (X-Total-Count, or null); pass `url: result.next` for the next page.
   */
  async getJobs(options = {}) {
    const { token, query, url } = options;
    const call = callOptions(options);
    const result = url
      ? await this.request('GET', url, { token, ...call })
      : await this.request('GET', '/@jobs', { token, query, ...call });
    const total = result.headers.get('X-Total-Count');
    return {
      ...result,
      next: nextLink(result.headers.get('Link')),
      total: total === null ? null : Number(total),
    };
  }

  /** Every page of `GET /@jobs`, one job at a time, stopping after `limit` when given. */
  async *iterJobs(options = {}) {
    const { token, query, limit } = options;
    const call = callOptions(options);
    let seen = 0;
    let page = await this.getJobs({ token, query, ...call });
    for (;;) {
      for (const job of page.data) {
        if (limit !== undefined && seen >= limit) return;
        seen += 1;
        yield job;
      }
      if (!page.next || (limit !== undefined && seen >= limit)) return;
      page = await this.getJobs({ token, url: page.next, ...call });
    }
  }

  /** `GET /@jobs/{id}`. */
  async getJob(options = {}) {
    return this.request('GET', jobPath(options.params), {
      token: options.token,
      ...callOptions(options),
    });
  }

  /**
   * `POST /@jobs`. `data` is `{ params: { action, ... }, title?, description? }`;
   * `headers` may carry an `Idempotency-Key`.
   */
  createJob(options = {}) {
    const { token, data, headers } = options;
    return this.request('POST', '/@jobs', { token, data, headers, ...callOptions(options) });
  }

  /**
   * `POST /@jobs` with an array: a bulk submit of 1 to 1,000 jobs, all created or none.
   * `data` is an array of `createJob` bodies; resolves to the jobs in the same order.
   * `headers` may carry an `Idempotency-Key` (job i is stored under `<key>#<i>`).
   */
  createJobs(options = {}) {
    const { token, data, headers } = options;
    if (!Array.isArray(data)) throw new TypeError('createJobs takes data: an array of jobs');
    return this.request('POST', '/@jobs', { token, data, headers, ...callOptions(options) });
  }

  /** `DELETE /@jobs/{id}`: resolves to `{ data: null, status: 204 }`. */
  async deleteJob(options = {}) {
    return this.request('DELETE', jobPath(options.params), {
      token: options.token,
      ...callOptions(options),
    });
  }

  async jobAction(name, options) {
    return this.request('POST', `${jobPath(options.params)}/${name}`, {
      token: options.token,
      ...callOptions(options),
    });
  }

  /** `POST /@jobs/{id}/abort`. */
  async abortJob(options = {}) {
    return this.jobAction('abort', options);
  }

  /** `POST /@jobs/{id}/retry`. */
  async retryJob(options = {}) {
    return this.jobAction('retry', options);
  }

  /**
   * `POST /@jobs/{id}/stop`: asks a running job of a resumable action to stop. The answer
   * (204) comes at once; the job becomes `stopped` at its handler's next check.
   */
  async stopJob(options = {}) {
    return this.jobAction('stop', options);
  }

  /** `POST /@jobs/{id}/resume`: runs a stopped job again, from its checkpoint. */
  async resumeJob(options = {}) {
    return this.jobAction('resume', options);
  }

  /** `POST /@jobs/{id}/restart`: a new job (201) made from a finished one, with `parent`. */
  async restartJob(options = {}) {
    return this.jobAction('restart', options);
  }

  /**
   * One page of `GET /@jobs/{id}/log`, oldest first. `query` takes level, b_size and
   * cursor. The result adds `next` (the next page's URL, or null); pass `url: result.next`
   * for the next page.
   */
  async getJobLog(options = {}) {
    const { token, params, query, url } = options;
    const call = callOptions(options);
    const result = url
      ? await this.request('GET', url, { token, ...call })
      : await this.request('GET', `${jobPath(params)}/log`, { token, query, ...call });
    return { ...result, next: nextLink(result.headers.get('Link')) };
  }

  /** Every page of `GET /@jobs/{id}/log`, one line at a time. */
  async *iterJobLog(options = {}) {
    const { token, params, query } = options;
    const call = callOptions(options);
    let page = await this.getJobLog({ token, params, query, ...call });
    for (;;) {
      yield* page.data;
      if (!page.next) return;
      page = await this.getJobLog({ token, url: page.next, ...call });
    }
  }

  /** `GET /@jobs/{id}/history`: what happened to the job, in time order. */
  async getJobHistory(options = {}) {
    return this.request('GET', `${jobPath(options.params)}/history`, {
      token: options.token,
      ...callOptions(options),
    });
  }

  /**
   * `GET /@jobs/@stats`: counts of the jobs the user may see. `query` takes the
   * endpoint's parameters, e.g. `{ minutes: 60 }`.
   */
  getStats(options = {}) {
    const { token, query } = options;
    return this.request('GET', '/@jobs/@stats', { token, query, ...callOptions(options) });
  }

  /**
   * One page of `GET /@job-actions`: the actions this user may submit. `query` takes q
   * (name, title or description), b_size and cursor. The result adds `next` (the next
   * page's URL, or null); pass `url: result.next` for the next page.
   */
  async getJobActions(options = {}) {
    const { token, query, url } = options;
    const call = callOptions(options);
    const result = url
      ? await this.request('GET', url, { token, ...call })
      : await this.request('GET', '/@job-actions', { token, query, ...call });
    return { ...result, next: nextLink(result.headers.get('Link')) };
  }

  /**
   * `GET /@job-actions/{name}`: one action, Python or remote; a 404 for one the user may
   * not submit.
   */
  getJobAction(options = {}) {
    return this.request('GET', actionPath(options.params), {
      token: options.token,
      ...callOptions(options),
    });
  }

  /**
   * `PUT /@job-actions/{name}`: declares a remote action, or changes one (administrators).
   * `data` is its definition: `{ title, description, permission, resumable, params, result,
   * labels, max_retries, min_backoff, max_backoff, lease, claim_window, version? }`;
   * resolves to the action, `201` when it is new. With `version`, a change made from an
   * older version is a `409`.
   */
  putJobAction(options = {}) {
    const { token, params, data } = options;
    return this.request('PUT', actionPath(params), { token, data, ...callOptions(options) });
  }

  /** `DELETE /@job-actions/{name}`: a remote action (204); its jobs stay. */
  deleteJobAction(options = {}) {
    return this.request('DELETE', actionPath(options.params), {
      token: options.token,
      ...callOptions(options),
    });
  }

  /** `GET /@job-actions/{name}/versions`: a remote action's versions, newest first. */
  getJobActionVersions(options = {}) {
    return this.request('GET', `${actionPath(options.params)}/versions`, {
      token: options.token,
      ...callOptions(options),
    });
  }

  // --- consumers: running remote actions' jobs ---------------------------------------------

  /**
   * `POST /@jobs/@claim`: takes up to `limit` jobs of the remote `actions`, oldest first,
   * each with its `lease` (`{ id, expires }`) and, for a resumed job, its `checkpoint`.
   * `data` is `{ actions, labels?, claims?, limit?, wait? }`; with `wait` (seconds, up to
   * 30) the server answers when a job comes or the wait is over (`[]`). The call's
   * timeout is at least the wait plus {@link CLAIM_TIMEOUT_MARGIN_MS}, so that a long poll
   * is not cut short by the client's own timeout.
   */
  claimJobs(options = {}) {
    const { token, data } = options;
    if (!Array.isArray(data?.actions)) {
      throw new TypeError('claimJobs takes data: { actions: [names of remote actions], ... }');
    }
    const wait = Number(data.wait ?? 0);
    const floor = (Number.isFinite(wait) && wait > 0 ? wait * 1000 : 0) + CLAIM_TIMEOUT_MARGIN_MS;
    const limit = this.timeoutFor(options.timeout);
    return this.request('POST', '/@jobs/@claim', {
      token,
      data,
      signal: options.signal,
      timeout: limit === null ? null : Math.max(limit, floor),
    });
  }

  /**
   * `POST /@jobs/{id}/checkin`: renews a claimed job's lease. `data` is `{ lease,
   * progress?: { percent, message }, log?: [{ level, message }], data? }`; resolves to
   * `{ lease, abort, stop }`: `abort` (lease null) when the job was aborted, `stop` when
   * someone asked it to stop.
   */
  checkinJob(options = {}) {
    return this.leaseCall('checkin', options);
  }

  /** `POST /@jobs/{id}/complete`: `data` is `{ lease, result }` (204). */
  completeClaimedJob(options = {}) {
    return this.leaseCall('complete', options);
  }

  /**
   * `POST /@jobs/@complete`: completes 1 to 100 claimed jobs in one request. `data` is an
   * array of `{ uuid, lease, result? }` (`lease` may be the claim's whole `lease`);
   * resolves to one outcome an item, in order: `{ uuid, completed: true }`, or
   * `{ uuid, error: { type, message, ... } }` for a job its own complete would have
   * refused (`Lease refused` with the job's `status`, or `Validation error` with the
   * `fields` of a result the action's schema refuses: that job keeps running).
   */
  completeJobs(options = {}) {
    const { token, data } = options;
    if (!Array.isArray(data)) {
      throw new TypeError('completeJobs takes data: [{ uuid, lease, result }, ...]');
    }
    const items = data.map((item) => {
      const out = { ...item };
      if (out.lease && typeof out.lease === 'object') out.lease = out.lease.id;
      return out;
    });
    return this.request('POST', '/@jobs/@complete', {
      token,
      data: items,
      ...callOptions(options),
    });
  }

  /** `POST /@jobs/{id}/fail`: `data` is `{ lease, error: { type, message } }` (204). */
  failClaimedJob(options = {}) {
    return this.leaseCall('fail', options);
  }

  /**
   * `POST /@jobs/{id}/stopped`: the job stopped as asked; `data` is `{ lease, checkpoint }`,
   * what a resumed job's claim gives back (204). Resumable actions only.
   */
  stoppedClaimedJob(options = {}) {
    return this.leaseCall('stopped', options);
  }

  /** `POST /@jobs/{id}/release`: hands the job back, as a new attempt; `data` is `{ lease }`. */
  releaseClaimedJob(options = {}) {
    return this.leaseCall('release', options);
  }

  /** A consumer call on a claimed job; `data.lease` may be the claim's whole `lease`. */
  leaseCall(name, options) {
    const { token, params } = options;
    const data = { ...(options.data ?? {}) };
    if (data.lease && typeof data.lease === 'object') data.lease = data.lease.id;
    if (!data.lease || typeof data.lease !== 'string') {
      throw new TypeError('data.lease (the lease id of the claim) is required');
    }
    return this.request('POST', `${jobPath(params)}/${name}`, {
      token,
      data,
      ...callOptions(options),
    });
  }

  /**
   * Runs the jobs of remote `actions` with `handler(job, ctx)` (see {@link Consumer}):
   * claims them with long polls, at most `concurrency` at a time, checks in on each, and
   * completes, fails, stops or releases it as its handler ends. Resolves once `signal` has
   * aborted and every job is finished or handed back; rejects when a claim is refused
   * (401, 403, 400), after the same shutdown.
   */
  work(actions, handler, options = {}) {
    return new Consumer(this, actions, handler, options).run();
  }

  // --- scheduled jobs --------------------------------------------------------------------

  /** `GET /@scheduled-jobs`: every scheduled job, sorted by id (administrators only). */
  getScheduledJobs(options = {}) {
    return this.request('GET', '/@scheduled-jobs', {
      token: options.token,
      ...callOptions(options),
    });
  }

  /** `GET /@scheduled-jobs/{id}`. */
  async getScheduledJob(options = {}) {
    return this.request('GET', scheduledJobPath(options.params), {
      token: options.token,
      ...callOptions(options),
    });
  }

  /** `POST /@scheduled-jobs`: `data` is `{ id, action, schedule, params?, title?, ... }`. */
  createScheduledJob(options = {}) {
    const { token, data } = options;
    return this.request('POST', '/@scheduled-jobs', { token, data, ...callOptions(options) });
  }

  /**
   * `PATCH /@scheduled-jobs/{id}` with the properties in `data`. It asks for the changed
   * scheduled job (`Prefer: return=representation`), so `data` of the result is that;
   * pass `headers: { Prefer: 'return=minimal' }` for a bare 204.
   */
  async updateScheduledJob(options = {}) {
    const { token, params, data, headers } = options;
    return this.request('PATCH', scheduledJobPath(params), {
      token,
      data,
      headers: { Prefer: 'return=representation', ...(headers ?? {}) },
      ...callOptions(options),
    });
  }

  /** `DELETE /@scheduled-jobs/{id}`: 204; the jobs it created stay. */
  async deleteScheduledJob(options = {}) {
    return this.request('DELETE', scheduledJobPath(options.params), {
      token: options.token,
      ...callOptions(options),
    });
  }

  /** `GET /@scheduled-job-actions`: every action a scheduled job may run. */
  getScheduledJobActions(options = {}) {
    return this.request('GET', '/@scheduled-job-actions', {
      token: options.token,
      ...callOptions(options),
    });
  }

  /**
   * `GET /@scheduled-jobs/@preview`: when a schedule would fire next. `query` is
   * `{ schedule, timezone?, count? }`; `data` is `{ schedule, timezone, next: [dates] }`.
   */
  previewSchedule(options = {}) {
    const { token, query } = options;
    return this.request('GET', '/@scheduled-jobs/@preview', {
      token,
      query,
      ...callOptions(options),
    });
  }

  // --- live jobs: Server-Sent Events --------------------------------------------------------

  /**
   * `GET /@jobs/{id}/stream`, as an async iterator of `{ event, data, id }`: `status`
   * (data: the job), `progress`, `log` and `close` events. A fresh stream starts with the
   * job's status; with `lastEventId` it starts after that event. It ends after a `close`
   * whose data says `reconnect: false` (the job finished or was deleted); a dropped
   * connection, or a `close` that says reconnect, is resumed with `Last-Event-ID`.
   * Aborting `signal` ends it quietly. `reconnects` failed attempts in a row reject.
   * `timeout` bounds the wait for each connection's answer, not the stream.
   */
  streamJob({ token, params, lastEventId, signal, timeout, reconnects = 5 } = {}) {
    const path = `${jobPath(params)}/stream`;
    return this.events(path, { token, lastEventId, signal, timeout, reconnects });
  }

  /**
   * `GET /@jobs/stream`: a `status` event for each change of every job the user may see,
   * from now on; resumed like `streamJob`.
   */
  streamJobs({ token, lastEventId, signal, timeout, reconnects = 5 } = {}) {
    return this.events('/@jobs/stream', { token, lastEventId, signal, timeout, reconnects });
  }

  /**
   * Opens a stream: resolves to `{ response, release }` once its answer has come (the
   * timeout ends there); `release()` when done with it.
   */
  async openStream(path, { token, lastEventId, signal, timeout }) {
    const url = this.url(path);
    const href = url.href;
    const headers = { Accept: 'text/event-stream', 'Cache-Control': 'no-cache' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (lastEventId) headers['Last-Event-ID'] = lastEventId;
    const limit = this.timeoutFor(timeout);
    const deadline = new Deadline(signal, limit, () => timedOut('GET', href, limit));
    let response;
    try {
      response = await deadline.run(
        this.fetch(href, { method: 'GET', headers, signal: deadline.signal }),
      );
    } catch (cause) {
      deadline.release();
      if (cause instanceof NickJobsError || signal?.aborted) throw cause;
      throw networkError(cause, 'GET', href);
    }
    deadline.settle();
    const type = response.headers.get('Content-Type') ?? '';
    if (!response.ok || !type.startsWith('text/event-stream')) {
      const text = await response.text().catch(() => '');
      deadline.release();
      const parsed = text ? decodeData(text) : null;
      if (!response.ok) throw this.failure(response, parsed, 'GET', href);
      throw new NickJobsError(`GET ${path} answered ${type || 'no content type'}, not text/event-stream`, {
        status: response.status,
        body: parsed,
        method: 'GET',
        url: href,
      });
    }
    return { response, release: () => deadline.release() };
  }

  async *events(path, { token, lastEventId, signal, timeout, reconnects }) {
    const parser = new SSEParser(lastEventId ?? '');
    const delay = (failures) =>
      Math.min((parser.retry ?? 200) * 2 ** Math.max(failures - 1, 0), 30000);
    let failures = 0;
    for (;;) {
      let opened;
      try {
        opened = await this.openStream(path, {
          token,
          lastEventId: parser.lastEventId,
          signal,
          timeout,
        });
      } catch (error) {
        if (signal?.aborted) return;
        const unavailable = error.status === 0 || [502, 503, 504].includes(error.status);
        failures += 1;
        if (!unavailable || failures > reconnects) throw error;
        await sleep(error.retryAfter !== null ? error.retryAfter * 1000 : delay(failures), signal);
        continue;
      }
      parser.reset();
      const reader = opened.response.body.getReader();
      let received = false;
      let wait = null;
      try {
        while (wait === null) {
          const { value, done } = await reader.read();
          if (done) break; // ended without a close event: resume below
          received = true;
          for (const event of parser.feed(value)) {
            const data = decodeData(event.data);
            yield { event: event.event, data, id: event.id };
            // Aborted while the caller held the event: not one more, even from this chunk.
            if (signal?.aborted) return;
            if (event.event === 'close') {
              // A stream that reached its lifetime is resumed at once; a server that shuts
              // down needs the delay it asked for (retry:) to come back.
              if (!data?.reconnect) wait = -1;
              else wait = data.reason === 'lifetime' ? 0 : delay(0);
              break;
            }
          }
        }
      } catch {
        if (signal?.aborted) return;
        // dropped: resume below
      } finally {
        reader.cancel().catch(() => {});
        opened.release();
      }
      if (wait === -1) return;
      failures = received ? 0 : failures + 1;
      if (failures > reconnects) {
        throw new NickJobsError(`the event stream of ${this.apiPath} keeps closing`, {
          method: 'GET',
          url: this.url(path).href,
        });
      }
      await sleep(wait ?? delay(failures), signal);
      if (signal?.aborted) return;
    }
  }

  // --- streams for EventSource: tickets ----------------------------------------------------

  /**
   * The URL of a job's stream (`GET /@jobs/{id}/stream`) with a fresh ticket
   * (`POST /@stream-tickets`), for `new EventSource(url)`. The ticket is valid for the
   * server's `stream_ticket_ttl` (60 s): open it at once. `lastEventId` makes the stream
   * start after that event (`last_event_id`).
   */
  async streamUrl(options = {}) {
    return this.ticketUrl(streamTarget('job', options.params), options);
  }

  /** The URL of the all-jobs stream (`GET /@jobs/stream`) with a fresh ticket. */
  async jobsStreamUrl(options = {}) {
    return this.ticketUrl(streamTarget('jobs'), options);
  }

  /**
   * The URL of a job's followed log (`GET /@jobs/{id}/log?follow=true`) with a fresh
   * ticket; `query` takes `level` and `cursor`.
   */
  async logStreamUrl(options = {}) {
    return this.ticketUrl(streamTarget('log', options.params, options.query), options);
  }

  async ticketUrl({ path, query }, options) {
    const { token, lastEventId } = options;
    // Named from the API's root: the server binds it under its own path prefix.
    const stream = path + (query.follow ? '?follow=true' : '');
    const { data } = await this.request('POST', '/@stream-tickets', {
      token,
      data: { stream },
      ...callOptions(options),
    });
    const extra = { ticket: data.ticket, last_event_id: lastEventId || undefined };
    return this.url(path, { ...query, ...extra }).href;
  }

  /**
   * An EventSource on a stream (`kind`: 'job', 'jobs' or 'log'), opened with a ticket and
   * opened again with a fresh one whenever it ends but the stream goes on: after a close
   * that asks to reconnect, or when its own reconnection was refused (the ticket had
   * expired). Each time it resumes after the last event it had. See JobEventSource.
   */
  eventSource(options = {}) {
    const { kind = 'job', params, query } = options;
    const Impl = options.EventSource ?? globalThis.EventSource;
    if (typeof Impl !== 'function') {
      throw new TypeError('no EventSource here: pass one as eventSource({ EventSource })');
    }
    const target = streamTarget(kind, params, query);
    return new JobEventSource(this, target, { ...options, EventSource: Impl });
  }
}

/** Where a stream of `kind` is: its path and its own query. */
function streamTarget(kind, params, query) {
  if (kind === 'job') return { kind, path: `${jobPath(params)}/stream`, query: {} };
  if (kind === 'jobs') return { kind, path: '/@jobs/stream', query: {} };
  if (kind === 'log') {
    return { kind, path: `${jobPath(params)}/log`, query: { ...(query ?? {}), follow: 'true' } };
  }
  throw new TypeError(`kind is 'job', 'jobs' or 'log', not ${JSON.stringify(kind)}`);
}

// The events the streams send; an EventSource has no catch-all listener for named events.
const EVENT_NAMES = ['status', 'progress', 'log', 'close'];
const REOPEN_MS = 1000;

// A refusal that asking again won't change (not a busy or unreachable server).
function refused(error) {
  return (
    error instanceof NickJobsError &&
    error.status >= 400 &&
    error.status < 500 &&
    ![408, 429].includes(error.status)
  );
}

/**
 * What `client.eventSource()` returns: one stream read through EventSources, each opened
 * with a fresh ticket. `onEvent({ event, data, id })` gets each event, `data` decoded from
 * JSON. It ends (`done` resolves) after a `close` that says `reconnect: false`, or
 * `close()`, or when `signal` aborts; it gives up (`onError(error)`, `done` rejects) on a
 * refusal (an invalid token: 401; a job the user can't see: 404) or after `reconnects`
 * failed openings in a row.
 */
export class JobEventSource {
  #client;
  #target;
  #options;
  #source = null;
  #timer;
  #failures = 0;
  #settle;
  #abort;

  constructor(client, target, options) {
    this.#client = client;
    this.#target = target;
    this.#options = options;
    /** The id of the last event received: where a new EventSource starts again. */
    this.lastEventId = options.lastEventId || null;
    this.closed = false;
    /** Resolves once the stream is over; rejects with the error it gave up on. */
    this.done = new Promise((resolve, reject) => {
      this.#settle = (error) => (error ? reject(error) : resolve());
    });
    this.done.catch(() => {}); // onError may be how it is heard
    const { signal } = options;
    if (signal) {
      if (signal.aborted) {
        this.close();
        return;
      }
      this.#abort = () => this.close();
      signal.addEventListener('abort', this.#abort, { once: true });
    }
    this.#start(() => this.#open());
  }

  /** The EventSource open (or opening) now; null between two. */
  get source() {
    return this.#source;
  }

  /** Ends it: `done` resolves. */
  close() {
    this.#finish(null);
  }

  // Runs a step nobody awaits: what it throws ends the stream (no unhandled rejection).
  #start(step) {
    step().catch((error) => this.#finish(error));
  }

  async #token() {
    const { token } = this.#options;
    return typeof token === 'function' ? token() : token;
  }

  async #open() {
    this.#timer = undefined;
    let url;
    try {
      url = await this.#client.ticketUrl(this.#target, {
        token: await this.#token(),
        lastEventId: this.lastEventId,
        timeout: this.#options.timeout,
      });
    } catch (error) {
      if (this.closed) return;
      if (refused(error) || !(error instanceof NickJobsError)) return this.#finish(error);
      this.#failures += 1;
      if (this.#failures > (this.#options.reconnects ?? 5)) return this.#finish(error);
      return this.#reopen(error.retryAfter !== null ? error.retryAfter * 1000 : this.#delay());
    }
    if (this.closed) return;
    const Impl = this.#options.EventSource;
    const source = new Impl(url);
    this.#source = source;
    let opened = false;
    const current = () => this.#source === source && !this.closed;
    source.addEventListener('open', () => {
      if (!current()) return;
      opened = true;
      this.#failures = 0;
      this.#options.onOpen?.();
    });
    source.addEventListener('error', () => {
      // While CONNECTING the EventSource tries again by itself, with Last-Event-ID.
      if (!current() || source.readyState !== (Impl.CLOSED ?? 2)) return;
      this.#source = null;
      source.close();
      // An EventSource that was open and could not reconnect: its ticket had expired,
      // most likely. Otherwise it never opened, and says nothing of why.
      if (opened) this.#reopen(0);
      else this.#start(() => this.#notOpened());
    });
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (event) => {
        if (current()) this.#receive(source, event);
      });
    }
  }

  #receive(source, event) {
    if (event.lastEventId) this.lastEventId = event.lastEventId;
    const data = decodeData(event.data);
    try {
      this.#options.onEvent?.({ event: event.type, data, id: event.lastEventId || null });
    } finally {
      // Even when onEvent throws (its error goes on to the EventSource's dispatcher).
      if (event.type === 'close') this.#closeEvent(source, data);
    }
  }

  #closeEvent(source, data) {
    if (this.closed) return;
    // Before the EventSource reconnects by itself to a finished stream, or with a ticket
    // that may have expired.
    source.close();
    this.#source = null;
    if (!data?.reconnect) this.#finish(null);
    else this.#reopen(data.reason === 'lifetime' ? 0 : REOPEN_MS);
  }

  async #notOpened() {
    this.#failures += 1;
    // Ask with fetch, which hears the answer: a job that is gone or not the user's, or a
    // token no longer valid, ends it.
    try {
      const token = await this.#token();
      const { params, timeout } = this.#options;
      if (this.#target.kind === 'jobs') {
        await this.#client.request('GET', '/@jobs', { token, query: { b_size: 1 }, timeout });
      } else {
        await this.#client.getJob({ token, params, timeout });
      }
    } catch (error) {
      if (this.closed) return;
      if (refused(error)) return this.#finish(error);
    }
    if (this.closed) return;
    if (this.#failures > (this.#options.reconnects ?? 5)) {
      const href = this.#client.url(this.#target.path, this.#target.query).href;
      const message =
        `an EventSource on ${href} failed to open ${this.#failures} times in a row ` +
        '(in a page, a cross-origin request the browser refused (CORS) fails this way too)';
      return this.#finish(new NickJobsError(message, { method: 'GET', url: href }));
    }
    this.#reopen(this.#delay());
  }

  #delay() {
    return Math.min(REOPEN_MS * 2 ** Math.max(this.#failures - 1, 0), 30000);
  }

  #reopen(ms) {
    if (this.closed) return;
    this.#timer = setTimeout(() => this.#start(() => this.#open()), ms);
  }

  #finish(error) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.#timer);
    this.#source?.close();
    this.#source = null;
    if (this.#abort) this.#options.signal.removeEventListener('abort', this.#abort);
    this.#settle(error);
    if (error) this.#options.onError?.(error);
  }
}

// --- consumers: work() ------------------------------------------------------------------------

/** Milliseconds a claim's timeout adds to its `wait`, for the answer to come back. */
export const CLAIM_TIMEOUT_MARGIN_MS = 10000;

// The server's limits: a checkin's log lines, a message's characters, an error type's.
const MAX_LOG_BATCH = 1000;
const MAX_TEXT = 10000;
const MAX_ERROR_TYPE = 100;
const MAX_CLAIM = 100;
const LOG_LEVELS = ['debug', 'info', 'warning', 'error'];
const FINISH_METHODS = {
  fail: 'failClaimedJob',
  stopped: 'stoppedClaimedJob',
  release: 'releaseClaimedJob',
};

/**
 * What `ctx.check()` throws when the job must end now: `reason` is `'aborted'` (someone
 * aborted it), `'lost'` (its lease was refused: it ran out, and the job is another
 * attempt's now) or `'released'` (the consumer shut down and handed it back). Whatever
 * the handler does afterwards, nothing more is reported for the job.
 */
export class JobAborted extends Error {
  constructor(message = 'the job was aborted', { reason = 'aborted' } = {}) {
    super(message);
    this.name = 'JobAborted';
    this.reason = reason;
  }
}

/**
 * What `ctx.check()` throws when someone asked the job to stop (a resumable action's):
 * a handler that lets it through reports the job `stopped`, with `ctx.checkpoint`.
 */
export class JobStopped extends Error {
  constructor(message = 'the job was asked to stop') {
    super(message);
    this.name = 'JobStopped';
  }
}

function clip(text, max) {
  const value = String(text ?? '');
  return value.length > max ? value.slice(0, max) : value;
}

// An answer that will be the same when asked again (a 409 is a lease refused).
function definitive(error) {
  return !(error instanceof NickJobsError) || ![0, 429, 500, 502, 503, 504].includes(error.status);
}

/**
 * One claimed job while `work()` holds it: its handler's `ctx`, its checkins, and what
 * is reported when the handler ends.
 */
// How soon a claimed job's reports (progress, log lines) go to the server.
const REPORT_MS = 1000;

class ClaimedJob {
  constructor(consumer, job) {
    this.consumer = consumer;
    this.job = job;
    this.lease = job.lease.id;
    /** 'running', 'finishing' (reporting the outcome), 'released' or 'done'. */
    this.state = 'running';
    this.interrupt = null;
    this.pendingProgress = null;
    this.lines = [];
    this.checkpoint = job.checkpoint ?? null;
    this.controller = new AbortController();
    this.inflight = Promise.resolve();
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    const server = Date.parse(job.lease.expires) - Date.parse(job.started);
    const local = Date.parse(job.lease.expires) - Date.now();
    // The lease's length on the server's clock (started and expires are both its own).
    const leaseMs = server > 0 ? server : Math.max(local, 3000);
    this.interval = Math.max(leaseMs / 3, 500);
    this.timer = undefined;
    this.dueAt = Infinity;
    this.reportsWaiting = false;
    this.ctx = this.context();
  }

  context() {
    const claimed = this;
    return {
      job: this.job,
      signal: this.controller.signal,
      /** The checkpoint a resumed job was stopped with, or the last one saved; null. */
      get checkpoint() {
        return claimed.checkpoint;
      },
      saveCheckpoint(value) {
        claimed.checkpoint = value === undefined ? null : value;
      },
      progress(percent, message) {
        if (percent !== null && percent !== undefined) {
          if (typeof percent !== 'number' || !(percent >= 0 && percent <= 100)) {
            throw new RangeError(`progress takes a percent from 0 to 100, not ${percent}`);
          }
        }
        const progress = { percent: percent ?? null };
        if (message !== undefined) {
          progress.message = message === null ? null : clip(message, MAX_TEXT);
        }
        claimed.pendingProgress = progress;
        claimed.soon();
      },
      log(message, level = 'info') {
        if (!LOG_LEVELS.includes(level)) {
          throw new TypeError(`a log level is one of ${LOG_LEVELS.join(', ')}, not ${level}`);
        }
        claimed.lines.push({ level, message: clip(message, MAX_TEXT) });
        claimed.soon();
      },
      check() {
        if (claimed.interrupt) throw claimed.interrupt;
      },
    };
  }

  start(handler) {
    this.schedule();
    let outcome;
    try {
      outcome = Promise.resolve(handler(this.job, this.ctx));
    } catch (error) {
      outcome = Promise.reject(error);
    }
    outcome.then(
      (value) => this.finish({ value }),
      (error) => this.finish({ error }),
    );
    return this.done;
  }

  /** The next checkin, a third of the lease from now (sooner when reports wait). */
  schedule(ms = this.interval) {
    this.dueAt = Date.now() + ms;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reportsWaiting = false;
      this.inflight = this.checkin().finally(() => {
        if (this.state === 'running') this.schedule(this.reportsWaiting ? REPORT_MS : undefined);
      });
    }, ms);
  }

  /**
   * Progress or a log line waits: checked in within REPORT_MS, so that streams and the
   * dashboard follow a remote job as closely as a Python worker's (about a second).
   */
  soon() {
    if (this.state !== 'running' || this.timer === undefined) return;
    if (this.timer === null) {
      this.reportsWaiting = true; // a checkin is on its way: the next one comes soon
      return;
    }
    if (this.dueAt <= Date.now() + REPORT_MS) return;
    clearTimeout(this.timer);
    this.schedule(REPORT_MS);
  }

  setInterrupt(error) {
    if (this.interrupt instanceof JobAborted) return;
    this.interrupt = error;
    this.controller.abort(error);
  }

  /** One checkin with what is pending; true when the job is still this consumer's. */
  async checkin() {
    if (this.interrupt instanceof JobAborted) return false;
    const body = { lease: this.lease };
    const progress = this.pendingProgress;
    const lines = this.lines.splice(0, MAX_LOG_BATCH);
    if (progress) body.progress = progress;
    if (lines.length) body.log = lines;
    this.pendingProgress = null;
    this.failed = false;
    const { client } = this.consumer;
    try {
      const { data } = await client.checkinJob({
        token: await this.consumer.token(),
        params: { id: this.job.uuid },
        data: body,
        timeout: Math.max(this.interval, 1000),
      });
      if (data.abort) {
        this.setInterrupt(new JobAborted(`the job ${this.job.uuid} was aborted`));
        return false;
      }
      if (data.stop && !this.interrupt) {
        this.setInterrupt(new JobStopped(`the job ${this.job.uuid} was asked to stop`));
      }
      return true;
    } catch (error) {
      if (error instanceof NickJobsError && error.status === 409) {
        this.lost(error);
        return false;
      }
      // Sent again with the next checkin, unless newer progress came meanwhile.
      this.failed = true;
      this.lines.unshift(...lines);
      if (progress && !this.pendingProgress) this.pendingProgress = progress;
      this.consumer.report(error, this.job);
      return true;
    }
  }

  lost(error) {
    const status = error.body?.error?.status;
    if (status === 'aborted') {
      this.setInterrupt(new JobAborted(`the job ${this.job.uuid} was aborted`));
    } else {
      this.setInterrupt(new JobAborted(error.message, { reason: 'lost' }));
    }
  }

  async finish({ value, error }) {
    if (this.state !== 'running') return;
    this.state = 'finishing';
    clearTimeout(this.timer);
    try {
      await this.inflight;
      await this.report(value, error);
    } catch (failure) {
      this.consumer.report(failure, this.job);
    } finally {
      this.state = 'done';
      this.resolveDone();
    }
  }

  async report(value, error) {
    if (this.interrupt instanceof JobAborted) return;
    // The last progress and log lines go before the outcome, which ends the lease.
    // Lines that can't be sent after a few tries don't hold back the outcome.
    for (let failures = 0; (this.pendingProgress || this.lines.length) && failures < 3; ) {
      if (!(await this.checkin())) return;
      if (this.failed) {
        failures += 1;
        await sleep(500 * failures);
      }
    }
    if (this.interrupt instanceof JobAborted) return;
    if (error !== undefined) {
      if (error instanceof JobStopped && this.interrupt instanceof JobStopped) {
        await this.post('stopped', { checkpoint: this.checkpoint });
        return;
      }
      await this.post('fail', { error: errorBody(error) });
      return;
    }
    const result = value === undefined || value === null ? {} : value;
    if (typeof result !== 'object' || Array.isArray(result)) {
      const problem = new TypeError(
        `the handler returned ${JSON.stringify(result)}, not an object`,
      );
      await this.post('fail', { error: errorBody(problem) });
      return;
    }
    try {
      JSON.stringify(result);
    } catch (problem) {
      // Checked before it joins a batch, which it would keep from being sent.
      await this.post('fail', { error: errorBody(problem) });
      return;
    }
    const answer = await this.consumer.complete(this, result);
    // A refused lease is no error: the job was aborted or went to another attempt.
    if (answer.completed || answer.error?.type === 'Lease refused') return;
    if (answer.error?.type !== 'Validation error') {
      throw new NickJobsError(answer.error?.message ?? 'the job was not completed', {
        body: { error: answer.error },
      });
    }
    // The result does not fit the action's schema: the job would run until its lease
    // ran out, so it fails, saying why.
    const { fields } = answer.error;
    const detail = fields ? ` ${JSON.stringify(fields)}` : '';
    const message = `the result was refused: ${answer.error.message}${detail}`;
    await this.post('fail', { error: { type: 'InvalidResult', message: clip(message, MAX_TEXT) } });
  }

  /**
   * A consumer call that ends the lease, tried again while the server is unreachable or
   * busy. A refused lease is no error: the job was aborted or went to another attempt.
   */
  async post(name, data, { quiet = [] } = {}) {
    const { client } = this.consumer;
    const method = FINISH_METHODS[name];
    for (let attempt = 1; ; attempt += 1) {
      try {
        await client[method]({
          token: await this.consumer.token(),
          params: { id: this.job.uuid },
          data: { lease: this.lease, ...data },
          timeout: Math.max(this.interval, 5000),
        });
        return;
      } catch (error) {
        if (error instanceof NickJobsError && error.type === 'Lease refused') {
          return;
        }
        if (quiet.includes(error.status) || definitive(error) || attempt >= 4) throw error;
        await sleep(error.retryAfter !== null ? error.retryAfter * 1000 : 500 * 2 ** attempt);
      }
    }
  }

  /** Hands the job back (the consumer shuts down), unless its handler has ended. */
  async release() {
    if (this.state !== 'running') return this.done;
    this.state = 'released';
    clearTimeout(this.timer);
    const message = `the job ${this.job.uuid} was handed back`;
    this.setInterrupt(new JobAborted(message, { reason: 'released' }));
    try {
      await this.inflight;
      await this.post('release', {});
    } catch (error) {
      this.consumer.report(error, this.job);
    } finally {
      this.resolveDone();
    }
    return this.done;
  }
}

function errorBody(error) {
  const type = error instanceof Error || typeof error?.name === 'string' ? error.name : 'Error';
  const message = error instanceof Error ? error.message : String(error);
  return { type: clip(type || 'Error', MAX_ERROR_TYPE), message: clip(message, MAX_TEXT) };
}

/**
 * What `client.work()` runs: claims the jobs of remote `actions` and runs
 * `handler(job, ctx)` for each. `ctx` has `job`, `signal` (aborted when the job must end),
 * `progress(percent, message)`, `log(message, level)`, `check()` (throws JobAborted or
 * JobStopped), `checkpoint` and `saveCheckpoint(value)`.
 */
export class Consumer {
  #running = new Set();
  #wake = null;
  #graceEnds = null;
  #completions = [];
  #completing = false;

  constructor(client, actions, handler, options = {}) {
    const names = Array.isArray(actions) && actions.every((name) => typeof name === 'string');
    if (!names || !actions.length) {
      throw new TypeError('work takes the names of remote actions: a non-empty array of strings');
    }
    if (typeof handler !== 'function') throw new TypeError('work takes a handler(job, ctx)');
    const { concurrency = 1, wait = 20, grace = 30000 } = options;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new TypeError(`concurrency is a whole number from 1, not ${concurrency}`);
    }
    if (typeof wait !== 'number' || !(wait >= 0 && wait <= 30)) {
      throw new TypeError(`wait is a number of seconds from 0 to 30, not ${wait}`);
    }
    checkTimeout(grace, 'grace');
    this.client = client;
    this.actions = actions;
    this.handler = handler;
    this.options = options;
    this.concurrency = concurrency;
    this.wait = wait;
    this.grace = grace ?? Infinity;
  }

  async token() {
    const { token } = this.options;
    return typeof token === 'function' ? token() : token;
  }

  /** An error that ends no job's run nor the consumer: `onError`, else the console. */
  report(error, job) {
    const { onError } = this.options;
    if (onError) onError(error, job);
    else console.error(`nick-jobs consumer, job ${job?.uuid ?? '-'}:`, error);
  }

  /**
   * Completes `claimed` with `result`; resolves to its answer in a batch complete
   * (`{ uuid, completed: true }` or `{ uuid, error }`). The first job to end is sent at
   * once; those that end while that request is out go together in the next one, up to
   * 100: no job waits to fill a batch, and many short jobs cost a fraction of the
   * requests.
   */
  complete(claimed, result) {
    return new Promise((resolve, reject) => {
      this.#completions.push({ claimed, result, resolve, reject });
      if (!this.#completing) this.#sendCompletions();
    });
  }

  async #sendCompletions() {
    this.#completing = true;
    try {
      while (this.#completions.length) {
        const batch = this.#completions.splice(0, MAX_CLAIM);
        try {
          const answers = await this.#completeBatch(batch);
          batch.forEach((entry, index) => entry.resolve(answers[index]));
        } catch (error) {
          for (const entry of batch) entry.reject(error);
        }
      }
    } finally {
      this.#completing = false;
    }
  }

  /** One batch complete, tried again while the server is unreachable or busy. */
  async #completeBatch(batch) {
    const data = batch.map(({ claimed, result }) => ({
      uuid: claimed.job.uuid,
      lease: claimed.lease,
      result,
    }));
    const timeout = Math.max(...batch.map(({ claimed }) => claimed.interval), 5000);
    for (let attempt = 1; ; attempt += 1) {
      try {
        const { data: answers } = await this.client.completeJobs({
          token: await this.token(),
          data,
          timeout,
        });
        const byUuid = new Map(answers.map((answer) => [answer.uuid, answer]));
        const missing = { error: { type: 'Error', message: 'left out of the answer' } };
        return batch.map(({ claimed }) => byUuid.get(claimed.job.uuid) ?? missing);
      } catch (error) {
        if (definitive(error) || attempt >= 4) throw error;
        await sleep(error.retryAfter !== null ? error.retryAfter * 1000 : 500 * 2 ** attempt);
      }
    }
  }

  async run() {
    const { signal, labels = {}, claims = {} } = this.options;
    // Ends the claims: the caller's signal, or a claim the server refused. The grace
    // counts from then.
    const claiming = new AbortController();
    const stop = () => {
      claiming.abort();
      this.#graceEnds ??= Date.now() + this.grace;
    };
    if (signal?.aborted) stop();
    else signal?.addEventListener('abort', stop, { once: true });
    let fatal = null;
    let failures = 0;
    try {
      while (!claiming.signal.aborted) {
        const free = this.concurrency - this.#running.size;
        if (free <= 0) {
          await this.#slot(claiming.signal);
          continue;
        }
        let jobs;
        try {
          ({ data: jobs } = await this.client.claimJobs({
            token: await this.token(),
            data: {
              actions: this.actions,
              labels,
              claims,
              limit: Math.min(free, MAX_CLAIM),
              wait: this.wait,
            },
            // Not aborted with the rest: the server would go on looking for the rest of
            // the wait, and a job it found then would be lost until its lease ran out.
            timeout: this.options.timeout,
          }));
          failures = 0;
        } catch (error) {
          if (claiming.signal.aborted) break;
          if (definitive(error)) {
            fatal = error;
            stop();
            break;
          }
          failures += 1;
          this.report(error, null);
          const delay =
            error.retryAfter !== null ? error.retryAfter * 1000 : 1000 * 2 ** (failures - 1);
          await sleep(Math.min(delay, 30000), claiming.signal);
          continue;
        }
        if (claiming.signal.aborted) {
          // Claimed as the signal came: handed back at once.
          await Promise.all(jobs.map((job) => new ClaimedJob(this, job).release()));
          break;
        }
        for (const job of jobs) this.#start(job);
        // Without a wait, an empty answer comes at once: not a claim a moment.
        if (!jobs.length && this.wait < 1) await sleep(1000, claiming.signal);
      }
    } finally {
      signal?.removeEventListener('abort', stop);
    }
    await this.#drain();
    if (fatal) throw fatal;
  }

  #start(job) {
    const claimed = new ClaimedJob(this, job);
    this.#running.add(claimed);
    claimed.start(this.handler).then(() => {
      this.#running.delete(claimed);
      this.#wake?.();
    });
  }

  #slot(signal) {
    return new Promise((resolve) => {
      const done = () => {
        this.#wake = null;
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.#wake = done;
      if (signal.aborted) done();
      else signal.addEventListener('abort', done, { once: true });
    });
  }

  /** The running handlers get `grace` ms to end; the jobs still running are handed back. */
  async #drain() {
    if (!this.#running.size) return;
    let timer;
    // A grace of null or Infinity waits for every handler.
    const over = Number.isFinite(this.#graceEnds ?? 0)
      ? new Promise((resolve) => {
          timer = setTimeout(resolve, Math.max((this.#graceEnds ?? 0) - Date.now(), 0));
        })
      : new Promise(() => {});
    await Promise.race([Promise.all([...this.#running].map((claimed) => claimed.done)), over]);
    clearTimeout(timer);
    await Promise.all([...this.#running].map((claimed) => claimed.release()));
  }
}

export default Client;
