// #/jobs/<uuid>: one job. Every field, its progress and steps, its log following live
// (GET /@jobs/{uuid}/stream), its history, and the buttons its state allows.

import { h, fill } from '../dom.js';
import { FINISHED, formatDate, formatDuration, formatJSON, jobDuration, relative } from '../format.js';
import { DASH, confirmAction, errorText, notice, progressBar, statusBadge, toast } from '../ui.js';

const LEVELS = ['debug', 'info', 'warning', 'error'];
const MAX_LINES = 1000;

/** The buttons, each shown only in the states the API allows it in. */
const CONTROLS = [
  {
    name: 'abort', label: 'Abort', method: 'abortJob', when: (job) => ['created', 'running'].includes(job.status),
    confirm: (job) => ({ title: 'Abort this job?', message: `“${job.title}” stops ${job.status === 'running' ? 'at its next check' : 'before it starts'}. You can retry it later.`, confirm: 'Abort job' }),
  },
  {
    name: 'stop', label: 'Stop', method: 'stopJob', when: (job, action) => job.status === 'running' && action?.resumable,
    hint: 'Stops at the next check and keeps a checkpoint, to resume later.',
  },
  {
    name: 'resume', label: 'Resume', method: 'resumeJob',
    when: (job, action) => job.status === 'stopped' || (job.status === 'failed' && action?.resumable),
    hint: 'Runs again from its checkpoint, as a new attempt.',
  },
  { name: 'retry', label: 'Retry', method: 'retryJob', when: (job) => ['failed', 'aborted'].includes(job.status), hint: 'Runs again from the start, as a new attempt.' },
  { name: 'restart', label: 'Restart', method: 'restartJob', when: (job) => FINISHED.has(job.status), hint: 'Submits a new job with the same params.' },
  {
    name: 'delete', label: 'Delete', method: 'deleteJob', when: (job) => job.status !== 'running', danger: true,
    confirm: (job) => ({ title: 'Delete this job?', message: `“${job.title}”, its log and its history are deleted for good.`, confirm: 'Delete job' }),
  },
];

function jsonBlock(value, testid) {
  return h('pre', { class: 'json', tabindex: '0', dataset: { testid } }, formatJSON(value));
}

function timeText(value) {
  if (!value) return DASH;
  return h('time', { datetime: value, title: value }, `${formatDate(value)} (${relative(value)})`);
}

function lineKey(line) {
  return `${line.attempt}|${line.time}|${line.level}|${line.message}`;
}

export async function jobView(main, { session, params, signal, navigate }) {
  const uuid = params.uuid.toLowerCase();
  let job;
  try {
    ({ data: job } = await session.call('getJob', { params: { id: uuid } }));
  } catch (error) {
    if (signal.aborted) return;
    fill(main,
      h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
      h('h1', { tabindex: '-1' }, 'Job not found'),
      notice('error', error.status === 404 ? 'This job does not exist, or it is not yours.' : errorText(error), 'job-error'));
    return;
  }
  if (signal.aborted) return;

  let action = null;
  const actions = session.call('getJobActions', { query: { b_size: 1000 } })
    .then(({ data }) => { action = data.find((candidate) => candidate.name === job.params?.action) ?? null; })
    .catch(() => {});

  // --- the page's parts
  const title = h('h1', { tabindex: '-1', dataset: { testid: 'job-title' } });
  const badge = h('span', { dataset: { testid: 'job-status-slot' } });
  const controls = h('div', { class: 'controls', role: 'group', 'aria-label': 'Job actions', dataset: { testid: 'job-controls' } });
  const message = h('div', { class: 'form-message', 'aria-live': 'polite', dataset: { testid: 'job-message' } });
  const progress = h('section', { class: 'card', 'aria-labelledby': 'progress-h', dataset: { testid: 'job-progress' } });
  const details = h('dl', { class: 'details', dataset: { testid: 'job-details' } });
  const outcome = h('div', { class: 'outcome' });
  const lineage = h('div', { class: 'lineage', dataset: { testid: 'job-lineage' } });
  const history = h('tbody', { dataset: { testid: 'history-body' } });
  const levelSelect = h('select', { id: 'log-level', dataset: { testid: 'log-level' } },
    LEVELS.map((level) => h('option', { value: level }, level === 'debug' ? 'all (debug and up)' : `${level} and up`)));
  const followBox = h('input', { type: 'checkbox', id: 'log-follow', checked: true, dataset: { testid: 'log-follow' } });
  const log = h('ol', { class: 'log', tabindex: '0', 'aria-label': 'Log lines', dataset: { testid: 'job-log' } });
  const logNote = h('p', { class: 'muted small', dataset: { testid: 'log-note' } });
  const liveState = h('span', { class: 'live', dataset: { testid: 'live', state: 'connecting' } }, 'Connecting…');

  fill(
    main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/jobs', dataset: { testid: 'back-to-jobs' } }, '← Jobs')),
    h('div', { class: 'page-head' }, title, badge, liveState),
    controls,
    message,
    progress,
    h('div', { class: 'columns' },
      h('section', { class: 'card', 'aria-labelledby': 'details-h' }, h('h2', { id: 'details-h' }, 'Details'), details, lineage),
      h('section', { class: 'card', 'aria-labelledby': 'outcome-h' }, h('h2', { id: 'outcome-h' }, 'Params, result and error'), outcome)),
    h('section', { class: 'card', 'aria-labelledby': 'log-h' },
      h('div', { class: 'section-head' }, h('h2', { id: 'log-h' }, 'Log'),
        h('div', { class: 'inline-fields' },
          h('label', { for: 'log-level' }, 'Level '), levelSelect,
          h('label', { for: 'log-follow', class: 'checkbox' }, followBox, ' Follow'))),
      log, logNote),
    h('section', { class: 'card', 'aria-labelledby': 'history-h' },
      h('h2', { id: 'history-h' }, 'History'),
      h('div', { class: 'table-wrap' },
        h('table', { class: 'history', dataset: { testid: 'job-history' } },
          h('thead', {}, h('tr', {}, ['Time', 'Event', 'By', 'Attempt', 'Details'].map((col) => h('th', { scope: 'col' }, col)))),
          history))),
  );

  // --- rendering the job
  function renderProgress() {
    const value = job.progress;
    const steps = value?.steps ?? [];
    fill(progress,
      h('h2', { id: 'progress-h' }, 'Progress'),
      h('div', { class: 'progress-big' }, progressBar(value, { status: job.status })),
      h('p', { class: 'progress-message', dataset: { testid: 'progress-message' } }, value?.message ?? (job.status === 'created' ? 'Waiting for a worker.' : '')),
      steps.length ? stepList(steps) : null);
  }

  function stepItem(step) {
    return h('li', { class: `step step-${step.status}`, dataset: { status: step.status } },
      h('span', { class: 'step-mark', 'aria-hidden': 'true' }, step.status === 'done' ? '✓' : step.status === 'running' ? '▶' : '·'),
      h('span', { class: 'step-name' }, step.name),
      h('span', { class: 'step-count muted' }, step.total ? `${step.done ?? 0} / ${step.total}` : step.status));
  }

  /** A few steps around the current one; all of them one click away when there are many. */
  function stepList(steps) {
    const done = steps.filter((step) => step.status === 'done').length;
    const summary = h('p', { class: 'small muted', dataset: { testid: 'steps-summary' } }, `${done} of ${steps.length} steps done`);
    if (steps.length <= 12) return [summary, h('ol', { class: 'steps', dataset: { testid: 'job-steps' } }, steps.map(stepItem))];
    let at = steps.findIndex((step) => step.status !== 'done');
    if (at === -1) at = steps.length - 1;
    const window = steps.slice(Math.max(at - 3, 0), at + 5);
    return [
      summary,
      h('ol', { class: 'steps', dataset: { testid: 'job-steps' } }, window.map(stepItem)),
      h('details', {}, h('summary', {}, `All ${steps.length} steps`), h('ol', { class: 'steps' }, steps.map(stepItem))),
    ];
  }

  function renderControls() {
    fill(controls, CONTROLS.filter((control) => control.when(job, action)).map((control) =>
      h('button', {
        type: 'button',
        class: `button${control.danger ? ' danger' : ''}`,
        title: control.hint ?? null,
        dataset: { testid: `job-${control.name}` },
        onclick: () => run(control),
      }, control.label)));
  }

  function row(label, value, testid) {
    return [h('dt', {}, label), h('dd', { dataset: { testid: testid ?? `field-${label.toLowerCase()}` } }, value ?? DASH)];
  }

  function renderDetails() {
    document.title = `${job.title} · nick-jobs`;
    title.textContent = job.title || job.uuid;
    fill(badge, statusBadge(job.status));
    fill(details,
      row('Status', job.status, 'field-status'),
      row('UUID', h('code', {}, job.uuid), 'field-uuid'),
      row('Description', job.description || DASH, 'field-description'),
      row('Action', h('code', {}, job.params?.action ?? DASH), 'field-action'),
      row('User', job.actor, 'field-actor'),
      row('Attempt', String(job.attempt), 'field-attempt'),
      row('Created', timeText(job.created), 'field-created'),
      row('Started', timeText(job.started), 'field-started'),
      row('Finished', timeText(job.finished), 'field-finished'),
      row('Duration', h('span', { dataset: { duration: '' } }, formatDuration(jobDuration(job))), 'field-duration'),
      row('Next run', timeText(job.next_run), 'field-next-run'),
      row('Parent', job.parent ? h('a', { href: `#/jobs/${job.parent}`, dataset: { testid: 'parent-link' } }, job.parent) : DASH, 'field-parent'),
      row('URL', h('code', {}, job['@id']), 'field-url'),
    );
    fill(outcome,
      h('h3', {}, 'Params'), jsonBlock(job.params, 'job-params'),
      h('h3', {}, 'Result'), jsonBlock(job.result ?? {}, 'job-result'),
      job.error ? [h('h3', {}, 'Error'), jsonBlock(job.error, 'job-error-json')] : null);
  }

  function render() {
    renderDetails();
    renderProgress();
    renderControls();
  }

  async function loadHistory() {
    try {
      const { data } = await session.call('getJobHistory', { params: { id: uuid } });
      if (signal.aborted) return;
      fill(history, data.map((event) => {
        const { time, event: name, by, attempt, ...rest } = event;
        return h('tr', { dataset: { testid: 'history-row', event: name } },
          h('td', {}, timeText(time)), h('td', {}, name), h('td', {}, by), h('td', { class: 'num' }, String(attempt)),
          h('td', {}, Object.keys(rest).length ? h('details', {}, h('summary', {}, Object.keys(rest).join(', ')), jsonBlock(rest)) : DASH));
      }));
    } catch {
      // shown again at the next change
    }
  }

  async function loadLineage() {
    try {
      const { data } = await session.call('getJobs', { query: { parent: uuid, b_size: 20 } });
      if (signal.aborted) return;
      fill(lineage, data.length
        ? [h('h3', {}, 'Restarts'), h('ul', { dataset: { testid: 'restarts' } }, data.map((child) => h('li', {},
          h('a', { href: `#/jobs/${child.uuid}` }, child.title), ' ', statusBadge(child.status), ' ', h('span', { class: 'muted' }, formatDate(child.created)))))]
        : null);
    } catch {
      fill(lineage);
    }
  }

  // --- the log: what is stored, then what the stream brings, without repeats
  const rank = (level) => LEVELS.indexOf(level);
  let shown = new Set();
  let buffered = []; // log events that come while the stored lines are read
  function appendLine(line) {
    if (rank(line.level) < rank(levelSelect.value)) return;
    const key = lineKey(line);
    if (shown.has(key)) return;
    shown.add(key);
    log.append(h('li', { class: `line level-${line.level}`, dataset: { testid: 'log-line', level: line.level } },
      h('time', { datetime: line.time, title: line.time }, formatDate(line.time)), ' ',
      h('span', { class: 'level' }, line.level), ' ',
      line.attempt > 1 ? h('span', { class: 'muted' }, `#${line.attempt} `) : null,
      h('span', { class: 'message' }, line.message)));
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    if (followBox.checked) log.scrollTop = log.scrollHeight;
  }
  async function loadLog() {
    buffered = [];
    shown = new Set();
    log.replaceChildren();
    const level = levelSelect.value;
    const lines = [];
    let dropped = 0;
    try {
      for await (const line of session.client.iterJobLog({ token: session.token, params: { id: uuid }, query: { level, b_size: 1000 } })) {
        if (signal.aborted || level !== levelSelect.value) return;
        lines.push(line);
        if (lines.length > MAX_LINES) { lines.shift(); dropped += 1; }
      }
    } catch (error) {
      session.check(error);
      logNote.textContent = errorText(error);
    }
    for (const line of lines) appendLine(line);
    for (const line of buffered) appendLine(line);
    buffered = null;
    logNote.textContent = dropped ? `The first ${dropped} lines are not shown.` : log.childElementCount ? '' : 'No lines yet.';
  }
  levelSelect.addEventListener('change', loadLog);

  // --- the buttons
  async function run(control) {
    if (control.confirm) {
      const ok = await confirmAction(control.confirm(job));
      if (!ok) return;
    }
    fill(message);
    for (const button of controls.querySelectorAll('button')) button.disabled = true;
    try {
      const result = await session.call(control.method, { params: { id: uuid } });
      if (control.name === 'delete') {
        toast(`Deleted “${job.title}”.`, 'success');
        navigate('/jobs');
        return;
      }
      if (control.name === 'restart') {
        toast('Restarted as a new job.', 'success');
        navigate(`/jobs/${result.data.uuid}`);
        return;
      }
      toast(`${control.label}: done.`, 'success');
      ({ data: job } = await session.call('getJob', { params: { id: uuid } }));
      if (signal.aborted) return;
      render();
      loadHistory();
      startStream();
    } catch (error) {
      if (signal.aborted) return;
      // A race lost (the job changed meanwhile): the API's 409 says what it is now.
      fill(message, notice('error', errorText(error), 'job-action-error'));
      try {
        ({ data: job } = await session.call('getJob', { params: { id: uuid } }));
        render();
      } catch {
        // the stream or the next click will tell
      }
    } finally {
      for (const button of controls.querySelectorAll('button')) button.disabled = false;
    }
  }

  // --- live
  let streamController = null;
  function startStream() {
    streamController?.abort();
    streamController = new AbortController();
    const streamSignal = AbortSignal.any ? AbortSignal.any([signal, streamController.signal]) : streamController.signal;
    if (!AbortSignal.any) signal.addEventListener('abort', () => streamController.abort(), { once: true });
    liveState.dataset.state = 'connecting';
    liveState.textContent = 'Connecting…';
    session.follow('streamJob', { params: { id: uuid } }, {
      signal: streamSignal,
      onEvent: ({ event, data }) => {
        liveState.dataset.state = 'live';
        liveState.textContent = 'Live';
        if (event === 'status') {
          const changed = data.status !== job.status || data.attempt !== job.attempt;
          job = data;
          render();
          if (changed) loadHistory();
        } else if (event === 'progress') {
          if (data.attempt === job.attempt) {
            job = { ...job, progress: data.progress };
            renderProgress();
          }
        } else if (event === 'log') {
          if (buffered) buffered.push(data);
          else appendLine(data);
        } else if (event === 'close' && !data.reconnect) {
          liveState.dataset.state = 'off';
          liveState.textContent = data.reason === 'deleted' ? 'Deleted' : 'Finished';
          if (data.reason === 'deleted') fill(message, notice('info', 'This job has been deleted.', 'job-deleted'));
          loadHistory();
          loadLineage();
        }
      },
      onError: (error) => {
        liveState.dataset.state = 'off';
        liveState.textContent = 'Not live';
        liveState.title = errorText(error);
      },
    });
  }

  const ticker = setInterval(() => {
    if (job.status !== 'running') return;
    const cell = details.querySelector('[data-duration]');
    if (cell) cell.textContent = formatDuration(jobDuration(job));
  }, 1000);
  signal.addEventListener('abort', () => clearInterval(ticker));

  render();
  startStream();
  await actions;
  if (signal.aborted) return;
  renderControls();
  await Promise.all([loadLog(), loadHistory(), loadLineage()]);
}
