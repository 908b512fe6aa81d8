/**
 * A client for the nick-jobs `/@jobs` API (see docs/api.md), with the method names of
 * Nick's client. No dependencies: it needs only a global `fetch` (browsers, Node 18+).
 *
 *   import Client from 'nick-jobs-client';
 *   const cli = Client.initialize({ apiPath: 'http://localhost:8080' });
 *   const { data } = await cli.login({ data: { login: 'admin', password: 'admin' } });
 *   const jobs = await cli.getJobs({ token: data.token, query: { status: 'running' } });
 *
 * Every method resolves to `{ data, status, headers }`; `getJobs` and `getJobLog` add
 * `next` for paging. A failure rejects with a `NickJobsError` carrying `status` (0 when
 * no answer came back) and `body`, the server's JSON error body.
 *
 * `streamJob` and `streamJobs` are async iterators over a job's Server-Sent Events, read
 * with fetch (so they can send the Authorization header, which EventSource can't), and
 * resumed with Last-Event-ID when the connection drops.
 */

export const DEFAULT_API_PATH = 'http://localhost:8080';

export class NickJobsError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, body?: any, method?: string, url?: string, cause?: unknown}} [details]
   */
  constructor(message, { status = 0, body = null, method, url, cause, retryAfter = null } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NickJobsError';
    this.status = status;
    this.body = body;
    this.method = method;
    this.url = url;
    /** Seconds from a `Retry-After` header (429, 503), or null. */
    this.retryAfter = retryAfter;
  }

  /** The error's `type` ("Not found", "Invalid state", ...) when the server sent one. */
  get type() {
    return this.body?.error?.type ?? null;
  }
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
  /**
   * @param {{apiPath?: string, fetch?: typeof fetch}} [options]
   */
  constructor({ apiPath = DEFAULT_API_PATH, fetch: fetchImpl } = {}) {
    this.apiPath = apiPath.replace(/\/+$/, '');
    this.fetch = fetchImpl ?? globalThis.fetch?.bind(globalThis);
    if (!this.fetch) throw new TypeError('no fetch: pass one as Client.initialize({ fetch })');
  }

  /** As in Nick's client: `Client.initialize({ apiPath })` returns a client. */
  static initialize(options = {}) {
    return new Client(options);
  }

  /**
   * One request. `path` is a path under apiPath, or a URL this server handed out
   * (a `Link: rel="next"`), of which only the path and query are used.
   */
  async request(method, path, { token, query, data, headers } = {}) {
    const url = this.url(path, query);
    const sent = { Accept: 'application/json', ...(headers ?? {}) };
    if (token) sent.Authorization = `Bearer ${token}`;
    let body;
    if (data !== undefined) {
      sent['Content-Type'] = 'application/json';
      body = JSON.stringify(data);
    }
    let response;
    try {
      response = await this.fetch(url.href, { method, headers: sent, body });
    } catch (cause) {
      throw new NickJobsError(`can't reach ${this.apiPath}: ${cause?.cause?.code ?? cause?.message ?? cause}`, {
        method,
        url: url.href,
        cause,
      });
    }
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    if (!response.ok) throw this.failure(response, parsed, method, url.href);
    return { data: parsed, status: response.status, headers: response.headers };
  }

  url(path, query) {
    let url;
    if (/^https?:\/\//.test(path)) {
      const given = new URL(path);
      url = new URL(this.apiPath);
      url.pathname = given.pathname;
      url.search = given.search;
    } else {
      url = new URL(this.apiPath + path);
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
  login({ data } = {}) {
    return this.request('POST', '/@login', { data });
  }

  /** `POST /@login-renew`: a fresh token for a valid one. */
  loginRenew({ token } = {}) {
    return this.request('POST', '/@login-renew', { token });
  }

  /** `POST /@logout`: revokes the token. */
  logout({ token } = {}) {
    return this.request('POST', '/@logout', { token });
  }

  // --- jobs ------------------------------------------------------------------------------

  /**
   * `GET /@jobs`, newest first. `query` takes status, action, actor, q, parent, b_size,
   * cursor and count. The result adds `next` (the next page's URL, or null) and `total`
   * (X-Total-Count, or null); pass `url: result.next` for the next page.
   */
  async getJobs({ token, query, url } = {}) {
    const result = url
      ? await this.request('GET', url, { token })
      : await this.request('GET', '/@jobs', { token, query });
    const total = result.headers.get('X-Total-Count');
    return {
      ...result,
      next: nextLink(result.headers.get('Link')),
      total: total === null ? null : Number(total),
    };
  }

  /** Every page of `GET /@jobs`, one job at a time, stopping after `limit` when given. */
  async *iterJobs({ token, query, limit } = {}) {
    let seen = 0;
    let page = await this.getJobs({ token, query });
    for (;;) {
      for (const job of page.data) {
        if (limit !== undefined && seen >= limit) return;
        seen += 1;
        yield job;
      }
      if (!page.next || (limit !== undefined && seen >= limit)) return;
      page = await this.getJobs({ token, url: page.next });
    }
  }

  /** `GET /@jobs/{id}`. */
  async getJob({ token, params } = {}) {
    return this.request('GET', jobPath(params), { token });
  }

  /**
   * `POST /@jobs`. `data` is `{ params: { action, ... }, title?, description? }`;
   * `headers` may carry an `Idempotency-Key`.
   */
  createJob({ token, data, headers } = {}) {
    return this.request('POST', '/@jobs', { token, data, headers });
  }

  /** `DELETE /@jobs/{id}`: resolves to `{ data: null, status: 204 }`. */
  async deleteJob({ token, params } = {}) {
    return this.request('DELETE', jobPath(params), { token });
  }

  /** `POST /@jobs/{id}/abort`. */
  async abortJob({ token, params } = {}) {
    return this.request('POST', `${jobPath(params)}/abort`, { token });
  }

  /** `POST /@jobs/{id}/retry`. */
  async retryJob({ token, params } = {}) {
    return this.request('POST', `${jobPath(params)}/retry`, { token });
  }

  /**
   * `POST /@jobs/{id}/stop`: asks a running job of a resumable action to stop. The answer
   * (204) comes at once; the job becomes `stopped` at its handler's next check.
   */
  async stopJob({ token, params } = {}) {
    return this.request('POST', `${jobPath(params)}/stop`, { token });
  }

  /** `POST /@jobs/{id}/resume`: runs a stopped job again, from its checkpoint. */
  async resumeJob({ token, params } = {}) {
    return this.request('POST', `${jobPath(params)}/resume`, { token });
  }

  /** `POST /@jobs/{id}/restart`: a new job (201) made from a finished one, with `parent`. */
  async restartJob({ token, params } = {}) {
    return this.request('POST', `${jobPath(params)}/restart`, { token });
  }

  /**
   * One page of `GET /@jobs/{id}/log`, oldest first. `query` takes level, b_size and
   * cursor. The result adds `next` (the next page's URL, or null); pass `url: result.next`
   * for the next page.
   */
  async getJobLog({ token, params, query, url } = {}) {
    const result = url
      ? await this.request('GET', url, { token })
      : await this.request('GET', `${jobPath(params)}/log`, { token, query });
    return { ...result, next: nextLink(result.headers.get('Link')) };
  }

  /** Every page of `GET /@jobs/{id}/log`, one line at a time. */
  async *iterJobLog({ token, params, query } = {}) {
    let page = await this.getJobLog({ token, params, query });
    for (;;) {
      yield* page.data;
      if (!page.next) return;
      page = await this.getJobLog({ token, url: page.next });
    }
  }

  /** `GET /@jobs/{id}/history`: what happened to the job, in time order. */
  async getJobHistory({ token, params } = {}) {
    return this.request('GET', `${jobPath(params)}/history`, { token });
  }

  /**
   * One page of `GET /@job-actions`: the actions this user may submit. `query` takes q
   * (name, title or description), b_size and cursor. The result adds `next` (the next
   * page's URL, or null); pass `url: result.next` for the next page.
   */
  async getJobActions({ token, query, url } = {}) {
    const result = url
      ? await this.request('GET', url, { token })
      : await this.request('GET', '/@job-actions', { token, query });
    return { ...result, next: nextLink(result.headers.get('Link')) };
  }

  // --- scheduled jobs --------------------------------------------------------------------

  /** `GET /@scheduled-jobs`: every scheduled job, sorted by id (administrators only). */
  getScheduledJobs({ token } = {}) {
    return this.request('GET', '/@scheduled-jobs', { token });
  }

  /** `GET /@scheduled-jobs/{id}`. */
  async getScheduledJob({ token, params } = {}) {
    return this.request('GET', scheduledJobPath(params), { token });
  }

  /** `POST /@scheduled-jobs`: `data` is `{ id, action, schedule, params?, title?, ... }`. */
  createScheduledJob({ token, data } = {}) {
    return this.request('POST', '/@scheduled-jobs', { token, data });
  }

  /**
   * `PATCH /@scheduled-jobs/{id}` with the properties in `data`. It asks for the changed
   * scheduled job (`Prefer: return=representation`), so `data` of the result is that;
   * pass `headers: { Prefer: 'return=minimal' }` for a bare 204.
   */
  async updateScheduledJob({ token, params, data, headers } = {}) {
    return this.request('PATCH', scheduledJobPath(params), {
      token,
      data,
      headers: { Prefer: 'return=representation', ...(headers ?? {}) },
    });
  }

  /** `DELETE /@scheduled-jobs/{id}`: 204; the jobs it created stay. */
  async deleteScheduledJob({ token, params } = {}) {
    return this.request('DELETE', scheduledJobPath(params), { token });
  }

  /** `GET /@scheduled-job-actions`: every action a scheduled job may run. */
  getScheduledJobActions({ token } = {}) {
    return this.request('GET', '/@scheduled-job-actions', { token });
  }

  // --- live jobs: Server-Sent Events --------------------------------------------------------

  /**
   * `GET /@jobs/{id}/stream`, as an async iterator of `{ event, data, id }`: `status`
   * (data: the job), `progress`, `log` and `close` events. A fresh stream starts with the
   * job's status; with `lastEventId` it starts after that event. It ends after a `close`
   * whose data says `reconnect: false` (the job finished or was deleted); a dropped
   * connection, or a `close` that says reconnect, is resumed with `Last-Event-ID`.
   * Aborting `signal` ends it quietly. `reconnects` failed attempts in a row reject.
   */
  streamJob({ token, params, lastEventId, signal, reconnects = 5 } = {}) {
    const path = `${jobPath(params)}/stream`;
    return this.events(path, { token, lastEventId, signal, reconnects });
  }

  /**
   * `GET /@jobs/stream`: a `status` event for each change of every job the user may see,
   * from now on; resumed like `streamJob`.
   */
  streamJobs({ token, lastEventId, signal, reconnects = 5 } = {}) {
    return this.events('/@jobs/stream', { token, lastEventId, signal, reconnects });
  }

  async openStream(path, { token, lastEventId, signal }) {
    const url = this.url(path);
    const headers = { Accept: 'text/event-stream', 'Cache-Control': 'no-cache' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (lastEventId) headers['Last-Event-ID'] = lastEventId;
    let response;
    try {
      response = await this.fetch(url.href, { method: 'GET', headers, signal });
    } catch (cause) {
      if (signal?.aborted) throw cause;
      throw new NickJobsError(`can't reach ${this.apiPath}: ${cause?.cause?.code ?? cause?.message ?? cause}`, {
        method: 'GET',
        url: url.href,
        cause,
      });
    }
    const type = response.headers.get('Content-Type') ?? '';
    if (!response.ok || !type.startsWith('text/event-stream')) {
      const text = await response.text().catch(() => '');
      const parsed = text ? decodeData(text) : null;
      if (!response.ok) throw this.failure(response, parsed, 'GET', url.href);
      throw new NickJobsError(`GET ${path} answered ${type || 'no content type'}, not text/event-stream`, {
        status: response.status,
        body: parsed,
        method: 'GET',
        url: url.href,
      });
    }
    return response;
  }

  async *events(path, { token, lastEventId, signal, reconnects }) {
    const parser = new SSEParser(lastEventId ?? '');
    const delay = (failures) =>
      Math.min((parser.retry ?? 200) * 2 ** Math.max(failures - 1, 0), 30000);
    let failures = 0;
    for (;;) {
      let response;
      try {
        response = await this.openStream(path, { token, lastEventId: parser.lastEventId, signal });
      } catch (error) {
        if (signal?.aborted) return;
        const unavailable = error.status === 0 || [502, 503, 504].includes(error.status);
        failures += 1;
        if (!unavailable || failures > reconnects) throw error;
        await sleep(error.retryAfter !== null ? error.retryAfter * 1000 : delay(failures), signal);
        continue;
      }
      parser.reset();
      const reader = response.body.getReader();
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
}

export default Client;
