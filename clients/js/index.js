/**
 * A client for the nick-jobs `/@jobs` API (see docs/api.md), with the method names of
 * Nick's client. No dependencies: it needs only a global `fetch` (browsers, Node 18+).
 *
 *   import Client from 'nick-jobs-client';
 *   const cli = Client.initialize({ apiPath: 'http://localhost:8080' });
 *   const { data } = await cli.login({ data: { login: 'admin', password: 'admin' } });
 *   const jobs = await cli.getJobs({ token: data.token, query: { status: 'running' } });
 *
 * Every method resolves to `{ data, status, headers }`; `getJobs` adds `next` and
 * `total` for paging. A failure rejects with a `NickJobsError` carrying `status` (0 when
 * no answer came back) and `body`, the server's JSON error body.
 *
 * The streaming endpoints (streamJob) and stopJob, resumeJob and the scheduled-job
 * methods are added here once the service has them.
 */

export const DEFAULT_API_PATH = 'http://localhost:8080';

export class NickJobsError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, body?: any, method?: string, url?: string, cause?: unknown}} [details]
   */
  constructor(message, { status = 0, body = null, method, url, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NickJobsError';
    this.status = status;
    this.body = body;
    this.method = method;
    this.url = url;
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
    if (!response.ok) {
      const message =
        parsed?.error?.message ?? `HTTP ${response.status} ${response.statusText}`.trim();
      throw new NickJobsError(message, {
        status: response.status,
        body: parsed,
        method,
        url: url.href,
      });
    }
    return { data: parsed, status: response.status, headers: response.headers };
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
   * `GET /@jobs`, newest first. `query` takes status, action, actor, q, b_size, cursor and
   * count. The result adds `next` (the next page's URL, or null) and `total`
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

  /** `GET /@job-actions`: the actions this user may submit. */
  getJobActions({ token } = {}) {
    return this.request('GET', '/@job-actions', { token });
  }
}

export default Client;
