// #/overview: how the service is doing, from GET /@jobs/@stats: jobs finished per minute
// over the last hour (completed and failed), the oldest waiting job, counts by status
// and by action. Read again every 15 seconds.

import { h, fill } from '../dom.js';
import { finishedChart } from '../chart.js';
import { STATUSES, formatDate, formatDuration, formatTime, parseDate } from '../format.js';
import { DASH, errorText, notice } from '../ui.js';

const MINUTES = 60;
const REFRESH_MS = 15000;

function getStats(session, query) {
  // The client's method where it has one; the same request otherwise.
  if (typeof session.client.getStats === 'function') return session.call('getStats', { query });
  return session.request('GET', '/@jobs/@stats', { query });
}

/** {name: n} from an object of counts or a list of {<key>, count}. */
function countsOf(value, key) {
  if (!value) return {};
  if (Array.isArray(value)) {
    return Object.fromEntries(value.map((item) => [item[key] ?? item.name, item.count ?? item.total ?? 0]));
  }
  return value;
}

function total(value) {
  if (typeof value === 'number') return value;
  if (value && typeof value === 'object') {
    if (typeof value.total === 'number') return value.total;
    return Object.values(value).reduce((sum, n) => sum + (typeof n === 'number' ? n : 0), 0);
  }
  return 0;
}

/** The last `MINUTES` minutes, oldest first, each { time, completed, failed }. */
function perMinute(value) {
  const list = Array.isArray(value)
    ? value
    : Object.entries(value ?? {}).map(([minute, counts]) => ({ minute, ...counts }));
  const byMinute = new Map();
  for (const item of list) {
    const time = parseDate(item.minute ?? item.time ?? item.start ?? item.at);
    if (!time) continue;
    byMinute.set(Math.floor(time.getTime() / 60000), { completed: item.completed ?? 0, failed: item.failed ?? 0 });
  }
  const now = Math.floor(Date.now() / 60000);
  const minutes = [];
  for (let minute = now - MINUTES + 1; minute <= now; minute += 1) {
    const counts = byMinute.get(minute) ?? { completed: 0, failed: 0 };
    minutes.push({ time: new Date(minute * 60000), ...counts });
  }
  return minutes;
}

function normalize(data) {
  return {
    byStatus: countsOf(data.counts ?? data.by_status, 'status'),
    byAction: countsOf(data.by_action ?? data.actions ?? data.action, 'action'),
    oldest: data.oldest_waiting ?? null,
    minutes: perMinute(data.finished_per_minute ?? data.per_minute ?? data.finished ?? []),
  };
}

function oldestCard(oldest) {
  if (!oldest) {
    return [h('p', { class: 'big', dataset: { testid: 'oldest-waiting' } }, 'none'), h('p', { class: 'muted' }, 'No job is waiting for a worker.')];
  }
  // `age` is in seconds at the time the figures were read (`generated`).
  const since = parseDate(oldest.waiting_since ?? oldest.created);
  const age = typeof oldest.age === 'number' ? oldest.age * 1000 : since ? Date.now() - since.getTime() : null;
  return [
    h('p', { class: 'big', dataset: { testid: 'oldest-waiting' } }, formatDuration(age)),
    h('p', {},
      h('a', { href: `#/jobs/${oldest.uuid}`, dataset: { testid: 'oldest-link' } }, h('code', {}, oldest.action ?? 'job')),
      ` by ${oldest.actor ?? '?'}, attempt ${oldest.attempt ?? 1}`),
    since ? h('p', { class: 'muted' }, `Waiting since ${formatDate(since.toISOString())}`) : null,
  ];
}

export async function overviewView(main, { session, signal }) {
  document.title = 'Overview · nick-jobs';
  const body = h('div', { class: 'overview', dataset: { testid: 'overview' } }, h('p', { class: 'muted' }, 'Loading…'));
  const updated = h('span', { class: 'muted small', dataset: { testid: 'overview-updated' } });
  fill(main, h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Overview'), updated), body);

  async function load() {
    let stats;
    try {
      ({ data: stats } = await getStats(session, { minutes: MINUTES }));
    } catch (error) {
      if (signal.aborted) return;
      fill(body, notice('error', error.status === 404 ? 'This server has no statistics endpoint (GET /@jobs/@stats).' : errorText(error), 'overview-error'));
      return;
    }
    if (signal.aborted) return;
    const { byStatus, byAction, oldest, minutes } = normalize(stats ?? {});
    const totalJobs = typeof stats?.total === 'number' ? stats.total : total(byStatus);
    const finished = minutes.reduce((sum, m) => sum + m.completed + m.failed, 0);
    const failed = minutes.reduce((sum, m) => sum + m.failed, 0);
    fill(body,
      h('ul', { class: 'counts', 'aria-label': 'Jobs per status', dataset: { testid: 'overview-status' } },
        h('li', {}, h('a', { href: '#/jobs', class: 'count', dataset: { testid: 'overview-count-total' } },
          h('span', { class: 'count-value' }, String(totalJobs)), h('span', { class: 'count-label' }, session.isAdmin ? 'all jobs' : 'your jobs'))),
        STATUSES.map((status) => h('li', {},
          h('a', { href: `#/jobs?status=${status}`, class: `count status-${status}`, dataset: { testid: `overview-count-${status}` } },
            h('span', { class: 'count-value' }, String(total(byStatus[status]))), h('span', { class: 'count-label' }, status))))),
      h('div', { class: 'columns' },
        h('section', { class: 'card wide', 'aria-labelledby': 'chart-h' },
          h('h2', { id: 'chart-h' }, 'Finished per minute, last hour'),
          h('p', { class: 'legend' },
            h('span', { class: 'swatch completed', 'aria-hidden': 'true' }), ` completed (${finished - failed})  `,
            h('span', { class: 'swatch failed', 'aria-hidden': 'true' }), ` failed (${failed})`),
          finishedChart(minutes),
          h('details', {}, h('summary', {}, 'As a table'),
            h('table', { class: 'small-table' },
              h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Minute'), h('th', { scope: 'col' }, 'Completed'), h('th', { scope: 'col' }, 'Failed'))),
              h('tbody', {}, minutes.filter((m) => m.completed || m.failed).map((m) =>
                h('tr', {}, h('td', {}, formatTime(m.time)), h('td', { class: 'num' }, String(m.completed)), h('td', { class: 'num' }, String(m.failed)))))))),
        h('section', { class: 'card', 'aria-labelledby': 'oldest-h' }, h('h2', { id: 'oldest-h' }, 'Oldest waiting job'), oldestCard(oldest))),
      h('section', { class: 'card', 'aria-labelledby': 'actions-h' },
        h('h2', { id: 'actions-h' }, 'By action'),
        Object.keys(byAction).length
          ? h('table', { class: 'small-table', dataset: { testid: 'overview-actions' } },
            h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Action'), STATUSES.map((status) => h('th', { scope: 'col', class: 'num' }, status)), h('th', { scope: 'col', class: 'num' }, 'all'))),
            h('tbody', {}, Object.entries(byAction).sort(([a], [b]) => a.localeCompare(b)).map(([name, counts]) =>
              h('tr', {}, h('th', { scope: 'row' }, h('a', { href: `#/jobs?action=${encodeURIComponent(name)}` }, h('code', {}, name))),
                STATUSES.map((status) => h('td', { class: 'num' }, typeof counts === 'object' ? String(counts[status] ?? 0) : DASH)),
                h('td', { class: 'num' }, String(total(counts)))))))
          : h('p', { class: 'muted' }, 'No jobs yet.')));
    updated.textContent = `Updated ${formatTime(new Date())}`;
  }

  await load();
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener('abort', () => clearInterval(timer));
}
