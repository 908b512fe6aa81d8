// #/submit: pick an action (GET /@job-actions), fill in the form made from its params'
// JSON Schema, POST /@jobs. The API's 400 field errors are shown next to each field.

import { h, fill, field, setFieldError } from '../dom.js';
import { schemaForm, flatten } from '../schema-form.js';
import { errorText, notice, toast } from '../ui.js';

async function allActions(session) {
  const actions = [];
  let page = await session.call('getJobActions', { query: { b_size: 1000 } });
  actions.push(...page.data);
  while (page.next) {
    page = await session.call('getJobActions', { url: page.next });
    actions.push(...page.data);
  }
  return actions;
}

export async function submitView(main, { session, query, signal, navigate, replaceQuery }) {
  document.title = 'Submit a job · nick-jobs';
  const heading = h('h1', { tabindex: '-1' }, 'Submit a job');
  fill(main, heading, h('p', { class: 'muted' }, 'Loading the actions…'));
  let actions;
  try {
    actions = await allActions(session);
  } catch (error) {
    if (!signal.aborted) fill(main, heading, notice('error', errorText(error)));
    return;
  }
  if (signal.aborted) return;
  if (!actions.length) {
    fill(main, heading, notice('info', 'There is no action you may submit.', 'no-actions'));
    return;
  }

  const chosen = query.get('action');
  const actionSelect = h('select', { name: 'action', dataset: { testid: 'submit-action' } },
    actions.map((action) => h('option', { value: action.name, selected: action.name === chosen }, `${action.title} (${action.name})`)));
  const description = h('p', { class: 'hint', id: 'submit-action-description', dataset: { testid: 'submit-action-description' } });
  const titleInput = h('input', { type: 'text', name: 'title', maxlength: 500, dataset: { testid: 'submit-title' } });
  const descriptionInput = h('textarea', { name: 'description', rows: 2, maxlength: 10000, dataset: { testid: 'submit-description' } });
  const paramsSlot = h('fieldset', { class: 'params' });
  const message = h('div', { class: 'form-message', 'aria-live': 'polite', dataset: { testid: 'submit-message' } });
  const keyInput = h('input', { type: 'text', name: 'idempotency', maxlength: 200, autocomplete: 'off', dataset: { testid: 'submit-key' } });
  const submit = h('button', { type: 'submit', class: 'button primary', dataset: { testid: 'submit-job' } }, 'Submit job');
  let params = null;

  function selected() {
    return actions.find((action) => action.name === actionSelect.value) ?? actions[0];
  }

  function showAction() {
    const action = selected();
    description.textContent = action.description ?? '';
    titleInput.placeholder = action.title ?? action.name;
    descriptionInput.placeholder = action.description ?? '';
    params = schemaForm(action.params, { idPrefix: 'param' });
    fill(paramsSlot, h('legend', {}, `Params of ${action.name}`), params.element);
    fill(message);
  }

  const form = h('form', { class: 'card form', novalidate: true, dataset: { testid: 'submit-form' } },
    field({ id: 'submit-action', label: 'Action', control: actionSelect }),
    description,
    field({ id: 'submit-title', label: 'Title', control: titleInput, hint: 'Optional; the action’s title by default.' }),
    field({ id: 'submit-description', label: 'Description', control: descriptionInput, hint: 'Optional; the action’s description by default.' }),
    paramsSlot,
    h('details', { class: 'advanced' }, h('summary', {}, 'Advanced'),
      field({ id: 'submit-key', label: 'Idempotency key', control: keyInput, hint: 'Submitting again with the same key gives back the first job instead of a second one.' })),
    message,
    h('div', { class: 'actions' }, submit));

  actionSelect.addEventListener('change', () => {
    replaceQuery(new URLSearchParams({ action: actionSelect.value }));
    showAction();
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    params.clearErrors();
    for (const id of ['submit-title', 'submit-description', 'submit-action']) setFieldError(id, null);
    fill(message);
    const { params: values, errors } = params.read();
    if (Object.keys(errors).length) {
      params.showErrors(errors);
      fill(message, notice('error', 'Some fields need fixing.', 'submit-error'));
      return;
    }
    const data = { params: { action: selected().name, ...values } };
    if (titleInput.value.trim()) data.title = titleInput.value.trim();
    if (descriptionInput.value.trim()) data.description = descriptionInput.value.trim();
    const headers = keyInput.value.trim() ? { 'Idempotency-Key': keyInput.value.trim() } : undefined;
    submit.disabled = true;
    try {
      const { data: job, status } = await session.call('createJob', { data, headers });
      toast(status === 201 ? `Submitted “${job.title}”.` : `Already submitted with this key: “${job.title}”.`, 'success');
      navigate(`/jobs/${job.uuid}`);
    } catch (error) {
      if (signal.aborted) return;
      const fields = error.body?.error?.fields;
      const rest = [];
      if (fields) {
        const { params: paramErrors, ...top } = fields;
        if (paramErrors && typeof paramErrors === 'object' && !Array.isArray(paramErrors)) {
          const { action: actionError, ...others } = paramErrors;
          if (actionError) setFieldError('submit-action', flatten(actionError));
          rest.push(...params.showErrors(others));
        } else if (paramErrors) rest.push(`params: ${flatten(paramErrors)}`);
        for (const [name, messages] of Object.entries(top)) {
          if (['title', 'description'].includes(name)) setFieldError(`submit-${name}`, flatten(messages));
          else rest.push(`${name}: ${flatten(messages)}`);
        }
      }
      fill(message, notice('error', [errorText(error), ...rest].join(' '), 'submit-error'));
      form.querySelector('[aria-invalid=true]')?.focus();
    } finally {
      submit.disabled = false;
    }
  });

  fill(main, h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, '← Jobs')), heading, form);
  showAction();
}
