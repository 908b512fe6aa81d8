// #/schedules: the scheduled jobs (administrators only). List, create, edit, enable or
// disable, delete; the form previews a cron rule's next firings from the server
// (GET /@scheduled-jobs/@preview), computed by the scheduler's own code.

import { h, fill, field, setFieldError } from '../dom.js';
import { formatDate, relative } from '../format.js';
import { schemaForm, flatten } from '../schema-form.js';
import { DASH, confirmAction, errorText, notice, toast } from '../ui.js';

function previewSchedule(session, query, signal) {
  // The client's method where it has one; the same request otherwise.
  if (typeof session.client.previewSchedule === 'function') return session.call('previewSchedule', { query, signal });
  return session.request('GET', '/@scheduled-jobs/@preview', { query });
}

function when(value) {
  if (!value) return h('span', { class: 'muted' }, DASH);
  return h('time', { datetime: value, title: `${value} (${relative(value)})` }, formatDate(value));
}

export async function schedulesView(main, ctx) {
  const { session, params } = ctx;
  document.title = 'Schedules · nick-jobs';
  if (!session.isAdmin) {
    fill(main, h('h1', { tabindex: '-1' }, 'Schedules'), notice('info', 'Only administrators manage scheduled jobs.', 'schedules-forbidden'));
    return;
  }
  if (params.edit) return scheduleForm(main, ctx, params.edit === 'new' ? null : params.edit);
  return scheduleList(main, ctx);
}

async function scheduleList(main, { session, signal }) {
  const message = h('div', { 'aria-live': 'polite', dataset: { testid: 'schedules-message' } });
  const tbody = h('tbody', { dataset: { testid: 'schedules-body' } });
  const empty = h('p', { class: 'empty muted', hidden: true, dataset: { testid: 'schedules-empty' } }, 'No scheduled jobs yet.');
  fill(main,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Schedules'),
      h('a', { href: '#/schedules/new', class: 'button primary', dataset: { testid: 'new-schedule' } }, 'New schedule')),
    h('p', { class: 'muted' }, 'Cron rules that create jobs. Times are shown in your browser’s time zone.'),
    message,
    h('div', { class: 'table-wrap' },
      h('table', { class: 'schedules', dataset: { testid: 'schedules-table' } },
        h('thead', {}, h('tr', {}, ['Id', 'Title', 'Action', 'Schedule', 'Enabled', 'Last run', 'Next run', ''].map((col) => h('th', { scope: 'col' }, col)))),
        tbody)),
    empty);

  async function load() {
    try {
      const { data } = await session.call('getScheduledJobs');
      if (signal.aborted) return;
      fill(tbody, data.map(scheduleRow));
      empty.hidden = data.length > 0;
    } catch (error) {
      if (!signal.aborted) fill(message, notice('error', errorText(error)));
    }
  }

  function scheduleRow(item) {
    const declared = item.declared ? 'Declared in the configuration: change it there.' : null;
    const toggle = h('button', {
      type: 'button',
      class: `button toggle${item.enabled ? ' on' : ''}`,
      'aria-pressed': String(item.enabled),
      'aria-label': `${item.enabled ? 'Disable' : 'Enable'} ${item.id}`,
      disabled: Boolean(declared),
      title: declared ?? (item.enabled ? 'Enabled: click to disable' : 'Disabled: click to enable'),
      dataset: { testid: 'schedule-toggle' },
      onclick: async () => {
        try {
          await session.call('updateScheduledJob', { params: { id: item.id }, data: { enabled: !item.enabled } });
          toast(`${item.id} ${item.enabled ? 'disabled' : 'enabled'}.`, 'success');
          load();
        } catch (error) {
          fill(message, notice('error', errorText(error), 'schedule-error'));
        }
      },
    }, item.enabled ? 'On' : 'Off');
    const remove = h('button', {
      type: 'button', class: 'button danger small', disabled: Boolean(declared), title: declared,
      'aria-label': `Delete ${item.id}`, dataset: { testid: 'schedule-delete' },
      onclick: async () => {
        const ok = await confirmAction({ title: `Delete ${item.id}?`, message: 'It stops creating jobs. The jobs it created stay.', confirm: 'Delete schedule' });
        if (!ok) return;
        try {
          await session.call('deleteScheduledJob', { params: { id: item.id } });
          toast(`Deleted ${item.id}.`, 'success');
          load();
        } catch (error) {
          fill(message, notice('error', errorText(error), 'schedule-error'));
        }
      },
    }, 'Delete');
    return h('tr', { dataset: { testid: 'schedule-row', id: item.id } },
      h('td', {}, h('code', {}, item.id), item.declared ? h('span', { class: 'tag', title: declared }, 'declared') : null),
      h('td', {}, item.title, item.skipped ? h('p', { class: 'warning small', dataset: { testid: 'schedule-skipped' } }, `Disabled after a refused firing: ${item.skipped.message}`) : null),
      h('td', {}, h('code', {}, item.action)),
      h('td', {}, h('code', {}, item.schedule), h('span', { class: 'muted small' }, ` ${item.timezone}`)),
      h('td', {}, toggle),
      h('td', {}, when(item.last_run)),
      h('td', {}, when(item.next_run)),
      h('td', { class: 'row-actions' },
        declared ? null : h('a', { href: `#/schedules/${item.id}`, class: 'button small', 'aria-label': `Edit ${item.id}`, dataset: { testid: 'schedule-edit' } }, 'Edit'),
        remove));
  }

  await load();
}

async function scheduleForm(main, { session, signal, navigate }, id) {
  const creating = id === null;
  const heading = h('h1', { tabindex: '-1' }, creating ? 'New schedule' : `Edit ${id}`);
  fill(main, heading, h('p', { class: 'muted' }, 'Loading…'));
  let actions;
  let item = null;
  try {
    [{ data: actions }, item] = await Promise.all([
      session.call('getScheduledJobActions'),
      creating ? null : session.call('getScheduledJob', { params: { id } }).then((r) => r.data),
    ]);
  } catch (error) {
    if (!signal.aborted) fill(main, heading, notice('error', errorText(error)));
    return;
  }
  if (signal.aborted) return;

  const idInput = h('input', { type: 'text', name: 'id', pattern: '[a-z0-9_-]{1,100}', maxlength: 100, value: item?.id ?? '', disabled: !creating, autocomplete: 'off', dataset: { testid: 'schedule-id' } });
  const titleInput = h('input', { type: 'text', name: 'title', maxlength: 500, value: item?.title ?? '', dataset: { testid: 'schedule-title' } });
  const descriptionInput = h('textarea', { name: 'description', rows: 2, value: item?.description ?? '', dataset: { testid: 'schedule-description' } });
  const actionSelect = h('select', { name: 'action', dataset: { testid: 'schedule-action' } },
    actions.map((action) => h('option', { value: action.name, selected: action.name === item?.action }, `${action.title} (${action.name})`)));
  const scheduleInput = h('input', { type: 'text', name: 'schedule', value: item?.schedule ?? '0 * * * *', spellcheck: 'false', autocomplete: 'off', class: 'code', dataset: { testid: 'schedule-rule' } });
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  const zoneInput = h('input', { type: 'text', name: 'timezone', list: 'zones', value: item?.timezone ?? 'UTC', autocomplete: 'off', dataset: { testid: 'schedule-timezone' } });
  const zoneList = h('datalist', { id: 'zones' }, ['UTC', ...zones].map((zone) => h('option', { value: zone })));
  const enabledBox = h('input', { type: 'checkbox', name: 'enabled', checked: item ? item.enabled : true, dataset: { testid: 'schedule-enabled' } });
  const preview = h('div', { class: 'preview', 'aria-live': 'polite', dataset: { testid: 'schedule-preview' } });
  const paramsSlot = h('fieldset', { class: 'params' });
  const message = h('div', { class: 'form-message', 'aria-live': 'polite', dataset: { testid: 'schedule-message' } });
  const save = h('button', { type: 'submit', class: 'button primary', dataset: { testid: 'schedule-save' } }, creating ? 'Create schedule' : 'Save changes');
  let paramsForm = null;

  function showParams(values) {
    const action = actions.find((candidate) => candidate.name === actionSelect.value) ?? actions[0];
    if (!action) return;
    paramsForm = schemaForm(action.params, { idPrefix: 'sparam', values });
    fill(paramsSlot, h('legend', {}, `Params of ${action.name}`), paramsForm.element);
  }
  actionSelect.addEventListener('change', () => showParams({}));

  let previewTimer = null;
  let previewSeq = 0;
  function previewSoon() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(showPreview, 300);
  }
  async function showPreview() {
    const seq = ++previewSeq;
    const query = { schedule: scheduleInput.value.trim(), timezone: zoneInput.value.trim() || 'UTC', count: 5 };
    if (!query.schedule) {
      fill(preview);
      return;
    }
    try {
      const { data } = await previewSchedule(session, query, signal);
      if (seq !== previewSeq || signal.aborted) return;
      setFieldError('schedule-rule', null);
      setFieldError('schedule-timezone', null);
      fill(preview, h('p', { class: 'small muted' }, `Next firings (${data.timezone}), shown in your time zone:`),
        h('ol', { class: 'firings', dataset: { testid: 'preview-list' } }, data.next.map((time) => h('li', {}, when(time)))));
    } catch (error) {
      if (seq !== previewSeq || signal.aborted) return;
      const fields = error.body?.error?.fields ?? {};
      setFieldError('schedule-rule', fields.schedule ? flatten(fields.schedule) : null);
      setFieldError('schedule-timezone', fields.timezone ? flatten(fields.timezone) : null);
      fill(preview, fields.schedule || fields.timezone ? null : notice('error', errorText(error)));
    }
  }
  scheduleInput.addEventListener('input', previewSoon);
  zoneInput.addEventListener('input', previewSoon);
  signal.addEventListener('abort', () => clearTimeout(previewTimer));

  const form = h('form', { class: 'card form', novalidate: true, dataset: { testid: 'schedule-form' } },
    field({ id: 'schedule-id', label: 'Id', control: idInput, required: creating, hint: creating ? 'Lowercase letters, digits, - and _; it can’t change later.' : 'It can’t change.' }),
    field({ id: 'schedule-title', label: 'Title', control: titleInput, hint: 'Given to every job it creates; the action’s title by default.' }),
    field({ id: 'schedule-description', label: 'Description', control: descriptionInput }),
    field({ id: 'schedule-action', label: 'Action', control: actionSelect, required: true }),
    h('div', { class: 'two' },
      field({ id: 'schedule-rule', label: 'Schedule (cron)', control: scheduleInput, required: true, hint: 'minute hour day-of-month month day-of-week, e.g. 30 2 * * 0 (Sundays at 02:30).' }),
      field({ id: 'schedule-timezone', label: 'Time zone', control: zoneInput, hint: 'An IANA name: UTC, Europe/Amsterdam…' })),
    zoneList,
    preview,
    h('div', { class: 'field field-checkbox' }, h('label', { for: 'schedule-enabled', class: 'checkbox' }, enabledBox, ' Enabled')),
    paramsSlot,
    message,
    h('div', { class: 'actions' }, h('a', { href: '#/schedules', class: 'button subtle' }, 'Cancel'), save));
  enabledBox.id = 'schedule-enabled';

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(message);
    paramsForm?.clearErrors();
    for (const name of ['id', 'title', 'description', 'action', 'rule', 'timezone']) setFieldError(`schedule-${name}`, null);
    const { params, errors } = paramsForm ? paramsForm.read() : { params: {}, errors: {} };
    if (Object.keys(errors).length) {
      paramsForm.showErrors(errors);
      fill(message, notice('error', 'Some fields need fixing.', 'schedule-error'));
      return;
    }
    const data = {
      action: actionSelect.value,
      schedule: scheduleInput.value.trim(),
      timezone: zoneInput.value.trim() || 'UTC',
      enabled: enabledBox.checked,
      params,
    };
    if (titleInput.value.trim()) data.title = titleInput.value.trim();
    if (descriptionInput.value.trim() || !creating) data.description = descriptionInput.value.trim();
    save.disabled = true;
    try {
      if (creating) {
        data.id = idInput.value.trim();
        await session.call('createScheduledJob', { data });
      } else {
        await session.call('updateScheduledJob', { params: { id }, data });
      }
      toast(creating ? `Created ${data.id}.` : `Saved ${id}.`, 'success');
      navigate('/schedules');
    } catch (error) {
      if (signal.aborted) return;
      const fields = error.body?.error?.fields ?? {};
      const rest = [];
      for (const [name, messages] of Object.entries(fields)) {
        const target = { schedule: 'rule' }[name] ?? name;
        if (name === 'params' && messages && typeof messages === 'object' && !Array.isArray(messages)) {
          rest.push(...paramsForm.showErrors(messages));
        } else if (['id', 'title', 'description', 'action', 'rule', 'timezone'].includes(target)) {
          setFieldError(`schedule-${target}`, flatten(messages));
        } else rest.push(`${name}: ${flatten(messages)}`);
      }
      fill(message, notice('error', [errorText(error), ...rest].join(' '), 'schedule-error'));
      form.querySelector('[aria-invalid=true]')?.focus();
    } finally {
      save.disabled = false;
    }
  });

  fill(main, h('p', { class: 'crumbs' }, h('a', { href: '#/schedules' }, '← Schedules')), heading, form);
  showParams(item?.params ?? {});
  showPreview();
}
