// Type declarations for nick-jobs-client. The shapes follow docs/api.md.

export declare const DEFAULT_API_PATH: string;

export type JobStatus = 'created' | 'running' | 'completed' | 'failed' | 'aborted';

export interface JobParams {
  /** The name of the action that runs the job. */
  action: string;
  [key: string]: unknown;
}

export interface Job {
  '@id': string;
  uuid: string;
  title: string;
  description: string;
  params: JobParams;
  actor: string;
  /** UTC, as `toISOString()` writes it. */
  created: string;
  started: string | null;
  finished: string | null;
  status: JobStatus;
  result: Record<string, unknown>;
  attempt: number;
  /** Only on a failed job. */
  error?: { type: string; message: string };
}

export interface JobAction {
  name: string;
  title: string;
  description: string;
  permission: string;
  /** The action's parameters, as a JSON Schema. */
  params: Record<string, unknown>;
}

export interface ErrorBody {
  error: {
    type: string;
    message: string;
    /** Invalid fields, nested as in the request. */
    fields?: Record<string, unknown>;
    /** The job's state, when the state refused the request. */
    status?: JobStatus;
    [key: string]: unknown;
  };
}

export interface Result<T> {
  data: T;
  status: number;
  headers: Headers;
}

export interface JobsPage extends Result<Job[]> {
  /** The next page's URL (`Link: rel="next"`), or null on the last page. */
  next: string | null;
  /** `X-Total-Count`, when the server sent it. */
  total: number | null;
}

export interface JobsQuery {
  status?: JobStatus;
  action?: string;
  actor?: string;
  q?: string;
  b_size?: number;
  cursor?: string;
  count?: boolean;
}

export interface NewJob {
  params: JobParams;
  title?: string;
  description?: string;
}

export interface JobId {
  id: string;
}

export declare class NickJobsError extends Error {
  name: 'NickJobsError';
  /** The HTTP status; 0 when no answer came back. */
  status: number;
  /** The server's error body (`{ error: {...} }`), the raw text, or null. */
  body: ErrorBody | string | null;
  method?: string;
  url?: string;
  /** `body.error.type` when present. */
  readonly type: string | null;
}

export interface ClientOptions {
  /** The service's base URL; default http://localhost:8080. */
  apiPath?: string;
  /** A fetch implementation; default the global fetch. */
  fetch?: typeof fetch;
}

export interface RequestOptions {
  token?: string;
  query?: Record<string, string | number | boolean | null | undefined>;
  data?: unknown;
  headers?: Record<string, string>;
}

export declare class Client {
  constructor(options?: ClientOptions);
  static initialize(options?: ClientOptions): Client;
  readonly apiPath: string;

  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<Result<T>>;

  login(args: { data: { login: string; password: string } }): Promise<Result<{ token: string }>>;
  loginRenew(args: { token: string }): Promise<Result<{ token: string }>>;
  logout(args: { token: string }): Promise<Result<null>>;

  getJobs(args: { token: string; query?: JobsQuery; url?: string }): Promise<JobsPage>;
  iterJobs(args: { token: string; query?: JobsQuery; limit?: number }): AsyncGenerator<Job, void>;
  getJob(args: { token: string; params: JobId }): Promise<Result<Job>>;
  createJob(args: {
    token: string;
    data: NewJob;
    headers?: Record<string, string>;
  }): Promise<Result<Job>>;
  deleteJob(args: { token: string; params: JobId }): Promise<Result<null>>;
  abortJob(args: { token: string; params: JobId }): Promise<Result<null>>;
  retryJob(args: { token: string; params: JobId }): Promise<Result<null>>;
  getJobActions(args: { token: string }): Promise<Result<JobAction[]>>;
}

export default Client;
