// Dates, durations and numbers as people read them; the API's own values stay in titles.

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

export function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "2026-11-23 11:40:11" in the browser's zone, or "—". */
export function formatDate(value) {
  const date = parseDate(value);
  return date ? dateTime.format(date) : '—';
}

const shortDate = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** Compact, for tables: the time alone today, the day and minute otherwise. */
export function formatShort(value, now = new Date()) {
  const date = parseDate(value);
  if (!date) return '—';
  return date.toDateString() === now.toDateString() ? clock.format(date) : shortDate.format(date);
}

export function formatTime(date) {
  return timeOnly.format(date);
}

/** 0.4 s, 12 s, 3 min 5 s, 2 h 10 min, 3 d 4 h. */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  const seconds = Math.max(ms, 0) / 1000;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** How long the job's current attempt ran (or has been running), in ms; null if not started. */
export function jobDuration(job, now = Date.now()) {
  const started = parseDate(job.started);
  if (!started) return null;
  const finished = parseDate(job.finished);
  return (finished ? finished.getTime() : now) - started.getTime();
}

/** "3 min ago", "in 2 h". */
export function relative(value, now = Date.now()) {
  const date = parseDate(value);
  if (!date) return '';
  const diff = date.getTime() - now;
  const text = formatDuration(Math.abs(diff));
  return diff < 0 ? `${text} ago` : `in ${text}`;
}

export function formatJSON(value) {
  return JSON.stringify(value, null, 2);
}

export const STATUSES = ['created', 'running', 'completed', 'failed', 'aborted', 'stopped'];
export const FINISHED = new Set(['completed', 'failed', 'aborted']);
