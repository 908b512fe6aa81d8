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
  /** What a remote job's consumer sent with its last check-in; absent when it sent none. */
  checkin_data?: unknown;
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
  reason: 'finished' | 'stopped' | 'deleted' | 'lifetime' | 'shutdown' | 'overflow';
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
  /** Milliseconds to wait for each connection's answer (not the stream's life). */
  timeout?: number | null;
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
  /** 'python' (declared in code) or 'remote' (run by consumers). */
  kind?: 'python' | 'remote';
}

/** What `putJobAction` takes: a remote action's definition; defaults for what it leaves out. */
export interface RemoteJobActionDefinition {
  title?: string;
  description?: string;
  /** The permission a user needs to submit it; default `Manage Site`. */
  permission?: string;
  /** Whether its jobs can be stopped and resumed from a checkpoint. */
  resumable?: boolean;
  /** The JSON Schema (draft 2020-12) of its params. */
  params?: Record<string, unknown>;
  /** The JSON Schema of its result; null: any object. */
  result?: Record<string, unknown> | null;
  labels?: Record<string, string>;
  max_retries?: number;
  /** Seconds. */
  min_backoff?: number;
  max_backoff?: number;
  /** Seconds a claim lasts unless its consumer checks in (5 to 86400); default 60. */
  lease?: number;
  /** Seconds during which a job with claims goes only to consumers presenting them. */
  claim_window?: number;
  /** The version this change is made from: a 409 when the action has another by now. */
  version?: number;
  name?: string;
  kind?: 'remote';
}

/** A remote action, as `getJobAction` and `putJobAction` give it. */
export interface RemoteJobAction extends Required<Omit<RemoteJobActionDefinition, 'version' | 'name' | 'kind'>> {
  name: string;
  kind: 'remote';
  version: number;
}

export interface RemoteJobActionVersion extends RemoteJobAction {
  created: string;
  created_by: string;
}

export interface Lease {
  id: string;
  /** When it runs out unless the consumer checks in. */
  expires: string;
}

/** A job as a claim gives it: running, with its lease. */
export interface ClaimedJob extends Job {
  lease: Lease;
  /** What a resumed job was stopped with. */
  checkpoint?: unknown;
}

export interface ClaimRequest {
  /** The names of remote actions this consumer runs (1 to 50). */
  actions: string[];
  /** Only actions whose labels include all of these. */
  labels?: Record<string, string>;
  /** What this consumer offers a job's claims (claim windows). */
  claims?: Record<string, string>;
  /** 1 to 100; default 1. */
  limit?: number;
  /** Seconds (0 to 30) to wait for a job when there is none. */
  wait?: number;
}

export interface CheckinRequest {
  /** The lease's id, or the claim's `lease`. */
  lease: string | Lease;
  progress?: { percent?: number | null; message?: string | null };
  log?: Array<{ level?: LogLevel; message: string }>;
  /** Shown as the job's checkin_data. */
  data?: Record<string, unknown> | null;
}

export interface CheckinAnswer {
  /** The renewed lease; null when the job was aborted. */
  lease: Lease | null;
  abort: boolean;
  /** Someone asked the job to stop (a resumable action's). */
  stop: boolean;
}

/** One job of `completeJobs`. */
export interface CompleteItem {
  uuid: string;
  /** The lease's id, or the claim's `lease`. */
  lease: string | Lease;
  result?: Record<string, unknown>;
}

/** What became of one job of `completeJobs`: completed, or why not. */
export interface CompleteOutcome {
  uuid: string;
  completed?: true;
  /** `Lease refused` (with the job's `status`) or `Validation error` (with `fields`). */
  error?: { type: string; message: string; status?: JobStatus | null; fields?: Record<string, unknown> };
}

/** Thrown by `ctx.check()` when the job must end now; nothing more is reported for it. */
export declare class JobAborted extends Error {
  constructor(message?: string, options?: { reason?: 'aborted' | 'lost' | 'released' });
  name: 'JobAborted';
  /**
   * 'aborted': someone aborted the job; 'lost': its lease was refused (it ran out);
   * 'released': the consumer shut down and handed it back.
   */
  reason: 'aborted' | 'lost' | 'released';
}

/** Thrown by `ctx.check()` after a stop request: let it through to report the job stopped. */
export declare class JobStopped extends Error {
  constructor(message?: string);
  name: 'JobStopped';
}

/** What a `work()` handler gets besides the job. */
export interface JobContext {
  readonly job: ClaimedJob;
  /** Aborted (with the JobAborted or JobStopped as its reason) when the job must end. */
  readonly signal: AbortSignal;
  /** A resumed job's checkpoint, or the last one saved; null. */
  readonly checkpoint: unknown;
  /** What a stop reports (`stopped`), and a resumed job's `checkpoint` gets back. */
  saveCheckpoint(value: unknown): void;
  /** Sent with the next checkin; percent 0 to 100 (a RangeError otherwise). */
  progress(percent: number | null, message?: string | null): void;
  /** A log line, sent with the next checkin. */
  log(message: string, level?: LogLevel): void;
  /** Throws JobAborted or JobStopped when the job must end; else nothing. */
  check(): void;
}

export type JobHandler = (
  job: ClaimedJob,
  ctx: JobContext,
) => Record<string, unknown> | void | Promise<Record<string, unknown> | void>;

export interface WorkOptions {
  /** A token (role Worker or Administrator), or a function giving the current one. */
  token: string | (() => string | Promise<string>);
  /** Jobs run at once; default 1. */
  concurrency?: number;
  labels?: Record<string, string>;
  claims?: Record<string, string>;
  /** Aborting it stops the claims, and ends work() after the running jobs (see grace). */
  signal?: AbortSignal;
  /** Seconds each claim waits for a job (long polling), 0 to 30; default 20. */
  wait?: number;
  /** Milliseconds the running handlers get, once signal aborts, before their jobs are handed back; default 30000. */
  grace?: number;
  /** The claims' timeout, in milliseconds (at least their wait plus 10 s). */
  timeout?: number | null;
  /** Errors that end neither a job's run nor work() (a failed checkin, ...); default console.error. */
  onError?: (error: unknown, job: ClaimedJob | null) => void;
}

/** Milliseconds a claim's timeout adds to its wait. */
export declare const CLAIM_TIMEOUT_MARGIN_MS: number;

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
  /**
   * Why no answer came back: `'timeout'` (the call's timeout passed), `'network'` (the
   * network or the server is down; in a page, also a cross-origin request the browser
   * refused), or null (an answer came: see `status`).
   */
  code: 'timeout' | 'network' | null;
  /** `body.error.type` when present. */
  readonly type: string | null;
}

export interface ClientOptions {
  /**
   * The service's base URL; default http://localhost:8080. In a page it may be a path
   * (`''` for the page's origin, `'/api'`), read against `globalThis.location`; outside
   * a page a relative apiPath is a TypeError.
   */
  apiPath?: string;
  /** A fetch implementation; default the global fetch. */
  fetch?: typeof fetch;
  /** Milliseconds each call may take until its answer is read; default none. */
  timeout?: number | null;
}

/** What every method takes besides its own arguments. */
export interface CallOptions {
  /** Aborting it rejects the call with the signal's reason (an `AbortError`). */
  signal?: AbortSignal;
  /**
   * Milliseconds until the call rejects with a NickJobsError whose `code` is 'timeout';
   * default the client's `timeout`. null, 0 or Infinity: none.
   */
  timeout?: number | null;
}

export interface RequestOptions extends CallOptions {
  token?: string;
  query?: Record<string, string | number | boolean | null | undefined>;
  data?: unknown;
  headers?: Record<string, string>;
}

/** `GET /@jobs/@stats`, for a dashboard. */
export interface JobStats {
  '@id': string;
  /** When the figures were made. */
  generated: string;
  /** The minutes `finished_per_minute` covers. */
  window: number;
  total: number;
  counts: Partial<Record<JobStatus, number>> & Record<string, number>;
  by_action: Record<string, Record<string, number>>;
  /** The job that has waited longest for a worker, or null. */
  oldest_waiting: {
    '@id': string;
    uuid: string;
    action: string;
    actor: string;
    attempt: number;
    created: string;
    waiting_since: string;
    /** Seconds it has waited. */
    age: number;
  } | null;
  finished_per_minute: Array<{ minute: string; [status: string]: string | number }>;
}

export interface StatsQuery {
  /** The window of `finished_per_minute`, 1 to 1440; default 60. */
  minutes?: number;
}

export interface SchedulePreviewQuery {
  /** A 5-field cron expression. */
  schedule: string;
  /** An IANA time zone; default UTC. */
  timezone?: string;
  /** How many firings. */
  count?: number;
}

export interface SchedulePreview {
  schedule: string;
  timezone: string;
  /** The next firings, as UTC dates. */
  next: string[];
}

/** `query` of a followed log: `level` and `cursor` of `GET /@jobs/{id}/log`. */
export interface LogStreamQuery {
  level?: LogLevel;
  cursor?: string;
}

export interface StreamUrlOptions extends CallOptions {
  token: string;
  /** The URL starts the stream after this event (`last_event_id`). */
  lastEventId?: string;
}

/** What `eventSource` needs of an EventSource: the browser's, or one for Node. */
export interface EventSourceLike extends EventTarget {
  readonly readyState: number;
  readonly url: string;
  close(): void;
}

export interface EventSourceConstructor {
  new (url: string): EventSourceLike;
  readonly CLOSED?: number;
}

export type StreamKind = 'job' | 'jobs' | 'log';

export interface EventSourceOptions extends CallOptions {
  /** A token, or a function giving the current one (called for each ticket). */
  token: string | (() => string | Promise<string>);
  /** 'job' (`/@jobs/{id}/stream`, the default), 'jobs' (`/@jobs/stream`) or 'log' (`/@jobs/{id}/log?follow=true`). */
  kind?: StreamKind;
  /** The job, for 'job' and 'log'. */
  params?: JobId;
  /** For 'log': `level`, `cursor`. */
  query?: LogStreamQuery;
  /** Start after this event. */
  lastEventId?: string;
  /** Each event, `data` decoded from JSON; `id` is the EventSource's `lastEventId`. */
  onEvent?: (event: JobStreamEvent) => void;
  /** Each time an EventSource opens. */
  onOpen?: () => void;
  /** The error it gave up on (also `done`'s rejection). */
  onError?: (error: NickJobsError | Error) => void;
  /** Default `globalThis.EventSource`. */
  EventSource?: EventSourceConstructor;
  /** Failed openings in a row before it gives up; default 5. */
  reconnects?: number;
  /** Aborting it closes the stream (`done` resolves). */
  signal?: AbortSignal;
}

/**
 * One stream read through EventSources, each opened with a fresh ticket: again after a
 * `close` that says `reconnect: true`, or when an EventSource's own reconnection is
 * refused (its ticket expired), each time after the last event it had.
 */
export declare class JobEventSource {
  /** The id of the last event received, or null. */
  readonly lastEventId: string | null;
  readonly closed: boolean;
  /** The EventSource open (or opening) now; null between two. */
  readonly source: EventSourceLike | null;
  /**
   * Resolves when the stream is over (a `close` with `reconnect: false`, `close()`, the
   * signal); rejects with the error it gave up on (401, 404, ...).
   */
  readonly done: Promise<void>;
  close(): void;
}

export declare class Client {
  constructor(options?: ClientOptions);
  static initialize(options?: ClientOptions): Client;
  /** As given, without trailing slashes. */
  readonly apiPath: string;
  /** The client's timeout in milliseconds, or null. */
  readonly timeout: number | null;

  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<Result<T>>;
  /** The absolute URL of a path under apiPath (or of a URL the server wrote), with `query`. */
  url(path: string, query?: RequestOptions['query']): URL;

  login(args: CallOptions & { data: { login: string; password: string } }): Promise<Result<{ token: string }>>;
  loginRenew(args: CallOptions & { token: string }): Promise<Result<{ token: string }>>;
  logout(args: CallOptions & { token: string }): Promise<Result<null>>;

  getJobs(args: CallOptions & { token: string; query?: JobsQuery; url?: string }): Promise<JobsPage>;
  iterJobs(args: CallOptions & { token: string; query?: JobsQuery; limit?: number }): AsyncGenerator<Job, void>;
  getJob(args: CallOptions & { token: string; params: JobId }): Promise<Result<Job>>;
  createJob(args: CallOptions & {
    token: string;
    data: NewJob;
    headers?: Record<string, string>;
  }): Promise<Result<Job>>;
  createJobs(args: CallOptions & {
    token: string;
    data: NewJob[];
    headers?: Record<string, string>;
  }): Promise<Result<Job[]>>;
  deleteJob(args: CallOptions & { token: string; params: JobId }): Promise<Result<null>>;
  abortJob(args: CallOptions & { token: string; params: JobId }): Promise<Result<null>>;
  retryJob(args: CallOptions & { token: string; params: JobId }): Promise<Result<null>>;
  stopJob(args: CallOptions & { token: string; params: JobId }): Promise<Result<null>>;
  resumeJob(args: CallOptions & { token: string; params: JobId }): Promise<Result<null>>;
  restartJob(args: CallOptions & { token: string; params: JobId }): Promise<Result<Job>>;
  getJobLog(args: CallOptions & {
    token: string;
    params?: JobId;
    query?: JobLogQuery;
    url?: string;
  }): Promise<JobLogPage>;
  iterJobLog(args: CallOptions & {
    token: string;
    params: JobId;
    query?: JobLogQuery;
  }): AsyncGenerator<JobLogLine, void>;
  getJobHistory(args: CallOptions & { token: string; params: JobId }): Promise<Result<JobHistoryEvent[]>>;
  getJobActions(args: CallOptions & {
    token: string;
    query?: JobActionsQuery;
    url?: string;
  }): Promise<Result<JobAction[]> & { next: string | null }>;

  getJobAction(args: CallOptions & { token: string; params: { name: string } }): Promise<Result<JobAction | RemoteJobAction>>;
  /** Resolves to the action: `201` when it is new, `200` when changed. */
  putJobAction(args: CallOptions & {
    token: string;
    params: { name: string };
    data: RemoteJobActionDefinition;
  }): Promise<Result<RemoteJobAction>>;
  deleteJobAction(args: CallOptions & { token: string; params: { name: string } }): Promise<Result<null>>;
  /** Newest first. */
  getJobActionVersions(args: CallOptions & { token: string; params: { name: string } }): Promise<Result<RemoteJobActionVersion[]>>;

  /** The call's timeout is at least `wait` plus CLAIM_TIMEOUT_MARGIN_MS. */
  claimJobs(args: CallOptions & { token: string; data: ClaimRequest }): Promise<Result<ClaimedJob[]>>;
  checkinJob(args: CallOptions & { token: string; params: JobId; data: CheckinRequest }): Promise<Result<CheckinAnswer>>;
  completeClaimedJob(args: CallOptions & {
    token: string;
    params: JobId;
    data: { lease: string | Lease; result: Record<string, unknown> };
  }): Promise<Result<null>>;
  /** Up to 100 claimed jobs in one request; one outcome an item, in order. */
  completeJobs(args: CallOptions & { token: string; data: CompleteItem[] }): Promise<Result<CompleteOutcome[]>>;
  failClaimedJob(args: CallOptions & {
    token: string;
    params: JobId;
    data: { lease: string | Lease; error: { type?: string; message: string } };
  }): Promise<Result<null>>;
  stoppedClaimedJob(args: CallOptions & {
    token: string;
    params: JobId;
    data: { lease: string | Lease; checkpoint: unknown };
  }): Promise<Result<null>>;
  releaseClaimedJob(args: CallOptions & { token: string; params: JobId; data: { lease: string | Lease } }): Promise<Result<null>>;
  /**
   * Runs the jobs of remote `actions` (Node): claims them, runs `handler(job, ctx)` for
   * each, checks in, and completes (a returned object), fails (a thrown error, its name
   * the type), stops (JobStopped after a stop request) or hands back (at shutdown) each.
   * Resolves once `signal` aborted and every job is done or handed back; rejects with the
   * error of a refused claim.
   */
  work(actions: string[], handler: JobHandler, options: WorkOptions): Promise<void>;

  getScheduledJobs(args: CallOptions & { token: string }): Promise<Result<ScheduledJob[]>>;
  getScheduledJob(args: CallOptions & { token: string; params: { id: string } }): Promise<Result<ScheduledJob>>;
  createScheduledJob(args: CallOptions & { token: string; data: NewScheduledJob }): Promise<Result<ScheduledJob>>;
  /** Resolves to the changed scheduled job, or to null with `Prefer: return=minimal`. */
  updateScheduledJob(args: CallOptions & {
    token: string;
    params: { id: string };
    data: ScheduledJobChanges;
    headers?: Record<string, string>;
  }): Promise<Result<ScheduledJob | null>>;
  deleteScheduledJob(args: CallOptions & { token: string; params: { id: string } }): Promise<Result<null>>;
  getScheduledJobActions(args: CallOptions & { token: string }): Promise<Result<JobAction[]>>;

  getStats(args: CallOptions & { token: string; query?: StatsQuery }): Promise<Result<JobStats>>;
  previewSchedule(
    args: CallOptions & { token: string; query: SchedulePreviewQuery },
  ): Promise<Result<SchedulePreview>>;

  streamJob(args: StreamOptions & { params: JobId }): AsyncGenerator<JobStreamEvent, void>;
  streamJobs(
    args: StreamOptions,
  ): AsyncGenerator<Extract<JobStreamEvent, { event: 'status' | 'close' }>, void>;

  /** `GET /@jobs/{id}/stream`'s URL with a fresh ticket, for `new EventSource(url)`. */
  streamUrl(args: StreamUrlOptions & { params: JobId }): Promise<string>;
  /** `GET /@jobs/stream`'s URL with a fresh ticket. */
  jobsStreamUrl(args: StreamUrlOptions): Promise<string>;
  /** `GET /@jobs/{id}/log?follow=true`'s URL with a fresh ticket. */
  logStreamUrl(
    args: StreamUrlOptions & { params: JobId; query?: LogStreamQuery },
  ): Promise<string>;
  /** An EventSource on a stream, opened again with a fresh ticket whenever it must be. */
  eventSource(args: EventSourceOptions): JobEventSource;
}

export default Client;
