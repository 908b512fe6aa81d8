// Type declarations for nick-jobs-client. The shapes follow docs/api.md.

export declare const DEFAULT_API_PATH: string;

export type JobStatus = 'created' | 'running' | 'completed' | 'failed' | 'aborted' | 'stopped';

export type LogLevel = 'debug' | 'info' | 'warning' | 'error';

export interface ProgressStep {
  name: string;
  done: number | null;
  total: number | null;
  status: 'pending' | 'running' | 'done';
}

export interface Progress {
  /** 0 to 100, derived from the steps. */
  percent: number;
  message: string | null;
  steps: ProgressStep[];
}

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
  /** What the running handler last reported; null until it reports. */
  progress?: Progress | null;
  /** The uuid of the job this one was restarted from. */
  parent?: string | null;
  /** When a waiting job may run next; null when it may run at once. */
  next_run?: string | null;
  /** Only on a failed job. */
  error?: { type: string; message: string };
}

export interface JobLogLine {
  time: string;
  level: LogLevel;
  message: string;
  attempt: number;
}

export interface JobLogPage extends Result<JobLogLine[]> {
  /** The next page's URL (`Link: rel="next"`), or null on the last page. */
  next: string | null;
}

export interface JobLogQuery {
  /** Only lines at this level or above. */
  level?: LogLevel;
  b_size?: number;
  cursor?: string;
}

export interface JobHistoryEvent {
  time: string;
  /** `created`, `started`, `completed`, `failed`, `aborted`, `retried`, `stop requested`, `resumed`, ... */
  event: string;
  /** A login, `worker` or `system`. */
  by: string;
  attempt: number;
  result?: Record<string, unknown>;
  error?: { type: string; message: string };
  previous_attempt?: {
    attempt: number;
    status: JobStatus;
    started: string | null;
    finished: string | null;
    result: Record<string, unknown>;
    error: { type: string; message: string } | null;
  };
  [key: string]: unknown;
}

export interface ScheduledJob {
  '@id': string;
  id: string;
  title: string;
  description: string;
  action: string;
  params: Record<string, unknown>;
  /** A 5-field cron expression, read in `timezone`. */
  schedule: string;
  enabled: boolean;
  /** An IANA time zone. */
  timezone: string;
  last_run: string | null;
  /** null while disabled. */
  next_run: string | null;
  /** From the ini file or an add-on: the API can't change or delete it. */
  declared: boolean;
  /**
   * The firing refused because its owner no longer exists or may no longer submit the
   * action; the schedule was disabled then. null otherwise; enabling it again clears it.
   */
  skipped: ScheduledJobSkip | null;
}

export interface ScheduledJobSkip {
  /** The slot that was not fired. */
  slot: string;
  /** When the firing was refused. */
  at: string;
  reason: 'owner_missing' | 'owner_lacks_permission';
  message: string;
}

export interface NewScheduledJob {
  /** 1 to 100 lowercase letters, digits, `-` or `_`. */
  id: string;
  action: string;
  schedule: string;
  params?: Record<string, unknown>;
  title?: string;
  description?: string;
  timezone?: string;
  enabled?: boolean;
}

export type ScheduledJobChanges = Partial<Omit<NewScheduledJob, 'id'>>;

export interface ProgressEventData {
  '@id': string;
  uuid: string;
  attempt: number;
  progress: Progress;
}

export interface LogEventData extends JobLogLine {
  uuid: string;
}

export interface CloseEventData {
  reason: 'finished' | 'deleted' | 'lifetime' | 'shutdown';
  /** false: the stream is over; true: the iterator resumes it with Last-Event-ID. */
  reconnect: boolean;
}

/** One Server-Sent Event of a job stream; `data` is decoded from JSON. */
export type JobStreamEvent =
  | { event: 'status'; data: Job; id: string | null }
  | { event: 'progress'; data: ProgressEventData; id: string | null }
  | { event: 'log'; data: LogEventData; id: string | null }
  | { event: 'close'; data: CloseEventData; id: string | null };

export interface StreamOptions {
  token: string;
  /** Start after this event (an earlier event's `id`). */
  lastEventId?: string;
  /** Aborting it ends the iteration quietly. */
  signal?: AbortSignal;
  /** Failed attempts in a row before the iterator rejects; default 5. */
  reconnects?: number;
}

export interface RawServerSentEvent {
  event: string;
  data: string;
  id: string | null;
}

/** The `text/event-stream` parser the streams use. */
export declare class SSEParser {
  constructor(lastEventId?: string);
  lastEventId: string;
  /** The last `retry:` value, in milliseconds. */
  retry: number | null;
  /** How many comment lines (keepalives) it has read. */
  comments: number;
  feed(chunk: Uint8Array | string): RawServerSentEvent[];
  reset(): void;
}

export interface JobAction {
  name: string;
  title: string;
  description: string;
  permission: string;
  /** Whether its jobs can be stopped and resumed. */
  resumable?: boolean;
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
  /** newest first (the default) or oldest first; a page's cursor keeps to its order */
  sort?: 'newest' | 'oldest';
  b_size?: number;
  cursor?: string;
  count?: boolean;
}

export interface JobActionsQuery {
  q?: string;
  b_size?: number;
  cursor?: string;
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
  /** Seconds from a `Retry-After` header (429, 503), or null. */
  retryAfter: number | null;
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
  stopJob(args: { token: string; params: JobId }): Promise<Result<null>>;
  resumeJob(args: { token: string; params: JobId }): Promise<Result<null>>;
  restartJob(args: { token: string; params: JobId }): Promise<Result<Job>>;
  getJobLog(args: {
    token: string;
    params?: JobId;
    query?: JobLogQuery;
    url?: string;
  }): Promise<JobLogPage>;
  iterJobLog(args: {
    token: string;
    params: JobId;
    query?: JobLogQuery;
  }): AsyncGenerator<JobLogLine, void>;
  getJobHistory(args: { token: string; params: JobId }): Promise<Result<JobHistoryEvent[]>>;
  getJobActions(args: {
    token: string;
    query?: JobActionsQuery;
    url?: string;
  }): Promise<Result<JobAction[]> & { next: string | null }>;

  getScheduledJobs(args: { token: string }): Promise<Result<ScheduledJob[]>>;
  getScheduledJob(args: { token: string; params: { id: string } }): Promise<Result<ScheduledJob>>;
  createScheduledJob(args: { token: string; data: NewScheduledJob }): Promise<Result<ScheduledJob>>;
  /** Resolves to the changed scheduled job, or to null with `Prefer: return=minimal`. */
  updateScheduledJob(args: {
    token: string;
    params: { id: string };
    data: ScheduledJobChanges;
    headers?: Record<string, string>;
  }): Promise<Result<ScheduledJob | null>>;
  deleteScheduledJob(args: { token: string; params: { id: string } }): Promise<Result<null>>;
  getScheduledJobActions(args: { token: string }): Promise<Result<JobAction[]>>;

  streamJob(args: StreamOptions & { params: JobId }): AsyncGenerator<JobStreamEvent, void>;
  streamJobs(
    args: StreamOptions,
  ): AsyncGenerator<Extract<JobStreamEvent, { event: 'status' | 'close' }>, void>;
}

export default Client;
