// #/jobs: the job list with its filters, paged with the API's cursor (Link: rel="next"),
// counts per status, and live updates from the all-jobs stream (GET /@jobs/stream).

import { h, fill, field } from '../dom.js';
import { STATUSES, formatDate, formatDuration, formatShort, jobDuration, relative } from '../format.js';
import { DASH, errorText, notice, progressBar, statusBadge } from '../ui.js';

const PAGE_SIZE = 25;
const FILTERS = ['status', 'action', 'actor', 'q'];

function actionOf(job) {
  return job.params?.action ?? '';
}

/** Whether `job` belongs in a list filtered by `filters`, as GET /@jobs would judge it. */
function matches(job, filters) {
  if (filters.status && job.status !== filters.status) return false;
  if (filters.action && actionOf(job) !== filters.action) return false;
  if (filters.actor && job.actor !== filters.actor) return false;
  if (filters.q) {
    const text = `${job.title ?? ''}\n${job.description ?? ''}`.toLowerCase();
    if (!text.includes(filters.q.toLowerCase())) return false;
  }
  return true;
}

function timeCell(value) {
  if (!value) return h('td', { class: 'muted' }, DASH);
  return h('td', {}, h('time', { datetime: value, title: `${formatDate(value)} (${relative(value)})` }, formatShort(value)));
}

function jobRow(job) {
  return h(
    'tr',
    { dataset: { uuid: job.uuid, testid: 'job-row', status: job.status } },
    h('td', {}, statusBadge(job.status)),
    h('td', { class: 'title' }, h('a', { href: `#/jobs/${job.uuid}`, dataset: { testid: 'job-link' } }, job.title || job.uuid)),
    h('td', {}, h('code', {}, actionOf(job))),
    h('td', { class: 'col-actor' }, job.actor),
    timeCell(job.created),
    h('td', { class: 'col-started' }, timeCell(job.started).firstChild),
    h('td', { class: 'col-finished' }, timeCell(job.finished).firstChild),
    h('td', { class: 'num', dataset: { duration: '' } }, formatDuration(jobDuration(job))),
    h('td', { class: 'col-progress' }, progressBar(job.progress, { status: job.status })),
  );
}

export async function jobsView(main, { session, query, signal, replaceQuery }) {
  const filters = Object.fromEntries(FILTERS.map((key) => [key, query.get(key) ?? '']));
  const state = { url: null, previous: [], next: null, rows: new Map(), loading: false };

  // --- the filter form
  const statusSelect = h('select', { name: 'status', dataset: { testid: 'filter-status' } },
    h('option', { value: '' }, 'Any status'),
    STATUSES.map((status) => h('option', { value: status, selected: filters.status === status }, status)));
  const actionInput = h('input', { type: 'text', name: 'action', list: 'action-names', value: filters.action, autocomplete: 'off', dataset: { testid: 'filter-action' } });
  const actorInput = h('input', { type: 'text', name: 'actor', value: filters.actor, autocomplete: 'off', dataset: { testid: 'filter-actor' } });
  const qInput = h('input', { type: 'search', name: 'q', value: filters.q, placeholder: 'Title or description', dataset: { testid: 'filter-q' } });
  const actionNames = h('datalist', { id: 'action-names' });
  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter jobs', dataset: { testid: 'filters' } },
    field({ id: 'filter-status', label: 'Status', control: statusSelect }),
    field({ id: 'filter-action', label: 'Action', control: actionInput }),
    session.isAdmin ? field({ id: 'filter-actor', label: 'User', control: actorInput }) : null,
    field({ id: 'filter-q', label: 'Search', control: qInput }),
    h('div', { class: 'filter-buttons' },
      h('button', { type: 'submit', class: 'button primary', dataset: { testid: 'filter-apply' } }, 'Filter'),
      h('button', { type: 'reset', class: 'button subtle', dataset: { testid: 'filter-clear' } }, 'Clear')),
    actionNames,
  );

  const counts = h('ul', { class: 'counts', 'aria-label': 'Jobs per status', dataset: { testid: 'status-counts' } });
  const live = h('span', { class: 'live', dataset: { testid: 'live', state: 'connecting' } }, 'Connecting…');
  const message = h('div', { 'aria-live': 'polite' });
  const tbody = h('tbody', { dataset: { testid: 'jobs-body' } });
  const table = h(
    'table',
    { class: 'jobs', dataset: { testid: 'jobs-table' } },
    h('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
    h('thead', {}, h('tr', {},
      ['Status', 'Title', 'Action', ['User', 'col-actor'], 'Created', ['Started', 'col-started'], ['Finished', 'col-finished'], ['Duration', 'num'], ['Progress', 'col-progress']]
        .map((col) => Array.isArray(col) ? h('th', { scope: 'col', class: col[1] }, col[0]) : h('th', { scope: 'col' }, col)))),
    tbody,
  );
  const empty = h('p', { class: 'empty muted', hidden: true, dataset: { testid: 'jobs-empty' } }, 'No jobs match.');
  const prevButton = h('button', { type: 'button', class: 'button', dataset: { testid: 'page-prev' } }, '← Newer');
  const firstButton = h('button', { type: 'button', class: 'button subtle', dataset: { testid: 'page-first' } }, 'Newest');
  const nextButton = h('button', { type: 'button', class: 'button', dataset: { testid: 'page-next' } }, 'Older →');
  const pageInfo = h('span', { class: 'muted', dataset: { testid: 'page-info' } });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' }, firstButton, prevButton, pageInfo, nextButton);

  fill(
    main,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Jobs'), live,
      h('a', { href: '#/submit', class: 'button primary', dataset: { testid: 'new-job' } }, 'Submit a job')),
    counts,
    form,
    message,
    h('div', { class: 'table-wrap' }, table),
    empty,
    pager,
  );

  function listQuery() {
    const q = { b_size: PAGE_SIZE };
    for (const key of FILTERS) if (filters[key]) q[key] = filters[key];
    return q;
  }

  function updatePager() {
    prevButton.disabled = state.previous.length === 0;
    firstButton.disabled = state.previous.length === 0;
    nextButton.disabled = !state.next;
    pageInfo.textContent = `Page ${state.previous.length + 1}`;
    empty.hidden = state.rows.size > 0;
  }

  function putRow(job, { prepend = false } = {}) {
    const row = jobRow(job);
    const old = state.rows.get(job.uuid);
    state.rows.set(job.uuid, { job, row });
    if (old) old.row.replaceWith(row);
    else if (prepend) tbody.prepend(row);
    else tbody.append(row);
  }

  // Each list request is numbered: an answer that comes back after a newer request was
  // sent (filters changed quickly) is dropped, so the table shows the latest filters.
  let loads = 0;
  async function load(url) {
    const mine = ++loads;
    state.loading = true;
    try {
      const page = url
        ? await session.call('getJobs', { url })
        : await session.call('getJobs', { query: listQuery() });
      if (signal.aborted || mine !== loads) return;
      state.url = url;
      state.next = page.next;
      state.rows.clear();
      tbody.replaceChildren();
      for (const job of page.data) putRow(job);
      fill(message);
      updatePager();
    } catch (error) {
      if (!signal.aborted && mine === loads) {
        fill(message, notice('error', errorText(error), 'jobs-error'));
      }
    } finally {
      if (mine === loads) state.loading = false;
    }
  }

  // --- counts per status: one counted query each, with the other filters applied
  let countsTimer = null;
  async function loadCounts() {
    const base = listQuery();
    delete base.status;
    delete base.b_size;
    let results;
    if (!Object.keys(base).length) {
      // Unfiltered: the figures of GET /@jobs/@stats, one request for every status.
      try {
        const { data } = await session.call('getStats', { query: { minutes: 1 } });
        results = STATUSES.map((status) => data.counts?.[status] ?? null);
      } catch {
        results = null;
      }
    }
    results ??= await Promise.all(
      STATUSES.map((status) =>
        session.call('getJobs', { query: { ...base, status, b_size: 1, count: true } })
          .then((page) => page.total ?? page.data.length)
          .catch(() => null)),
    );
    if (signal.aborted) return;
    fill(counts, STATUSES.map((status, index) => {
      const active = filters.status === status;
      return h('li', {},
        h('a', {
          href: countHref(status, active),
          class: `count status-${status}${active ? ' active' : ''}`,
          'aria-current': active ? 'true' : null,
          dataset: { testid: `count-${status}`, count: String(results[index] ?? '') },
        }, h('span', { class: 'count-value' }, results[index] ?? '?'), h('span', { class: 'count-label' }, status)));
    }));
  }
  function countHref(status, active) {
    const params = new URLSearchParams(Object.entries(filters).filter(([, value]) => value));
    if (active) params.delete('status');
    else params.set('status', status);
    return `#/jobs${[...params].length ? `?${params}` : ''}`;
  }
  function countsSoon() {
    if (countsTimer) return;
    countsTimer = setTimeout(() => { countsTimer = null; if (!signal.aborted) loadCounts(); }, 1000);
  }

  // --- events
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    filters.status = statusSelect.value;
    filters.action = actionInput.value.trim();
    filters.actor = session.isAdmin ? actorInput.value.trim() : '';
    filters.q = qInput.value.trim();
    const params = new URLSearchParams(Object.entries(filters).filter(([, value]) => value));
    replaceQuery(params);
    state.previous = [];
    load(null);
    loadCounts();
  });
  form.addEventListener('reset', () => {
    setTimeout(() => form.requestSubmit(), 0);
  });
  statusSelect.addEventListener('change', () => form.requestSubmit());
  nextButton.addEventListener('click', () => {
    if (!state.next) return;
    state.previous.push(state.url);
    load(state.next);
  });
  prevButton.addEventListener('click', () => {
    if (!state.previous.length) return;
    load(state.previous.pop());
  });
  firstButton.addEventListener('click', () => {
    state.previous = [];
    load(null);
  });

  // Running jobs' durations tick, and their progress is read again every few seconds
  // (the all-jobs stream sends changes of state, not of progress).
  let tick = 0;
  const ticker = setInterval(async () => {
    tick += 1;
    const running = [...state.rows.values()].filter(({ job }) => job.status === 'running');
    for (const { job, row } of running) {
      row.querySelector('[data-duration]').textContent = formatDuration(jobDuration(job));
    }
    if (running.length && tick % 2 === 0 && !state.loading) {
      const shown = loads; // a list loaded meanwhile makes this answer an old one
      try {
        const page = state.url
          ? await session.call('getJobs', { url: state.url })
          : await session.call('getJobs', { query: listQuery() });
        if (signal.aborted || shown !== loads) return;
        for (const job of page.data) {
          const known = state.rows.get(job.uuid);
          if (known && JSON.stringify(known.job) !== JSON.stringify(job)) putRow(job);
        }
      } catch {
        // the next tick tries again
      }
    }
  }, 1000);
  signal.addEventListener('abort', () => {
    clearInterval(ticker);
    clearTimeout(countsTimer);
  });

  // Action names for the filter's suggestions (those this user may submit).
  session.call('getJobActions', { query: { b_size: 1000 } })
    .then(({ data }) => fill(actionNames, data.map((action) => h('option', { value: action.name }, action.title))))
    .catch(() => {});

  await Promise.all([load(null), loadCounts()]);

  // Live: each change of a job the user may see. A job new to this list comes first when
  // the newest page is shown and it matches the filters; a job shown is updated in place.
  session.follow('streamJobs', {}, {
    signal,
    onOpen: () => {
      live.dataset.state = 'live';
      live.textContent = 'Live';
      live.title = 'Updated as jobs change';
    },
    onEvent: ({ event, data }) => {
      if (event !== 'status' || !data?.uuid) return;
      const known = state.rows.get(data.uuid);
      if (known) putRow(data);
      else if (!state.previous.length && matches(data, filters)) {
        putRow(data, { prepend: true });
        updatePager();
      }
      countsSoon();
    },
    onError: (error) => {
      live.dataset.state = 'off';
      live.textContent = 'Not live';
      live.title = errorText(error);
    },
  });
}
