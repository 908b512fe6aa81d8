// A form made from an action's params, as GET /@job-actions describes them in JSON Schema:
// one labelled control per property, with its description and default as a hint. Only
// what the user fills in is sent, so the job's params are what they chose (the action
// fills in its own defaults). The API's 400 messages are shown next to their field.

import { h, field, setFieldError } from './dom.js';

function typeOf(spec) {
  const type = Array.isArray(spec.type) ? spec.type.find((t) => t !== 'null') : spec.type;
  return type ?? (spec.enum ? 'string' : 'json');
}

function humanize(name) {
  const words = name.replace(/[_-]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function hintFor(spec) {
  const parts = [];
  if (spec.description) parts.push(spec.description);
  if (spec.default !== undefined) parts.push(`Default: ${JSON.stringify(spec.default)}.`);
  const type = typeOf(spec);
  if (type === 'object' || type === 'array' || type === 'json') parts.push('Write JSON.');
  return parts.join(' ');
}

function controlFor(spec, value) {
  const type = typeOf(spec);
  if (spec.enum) {
    return h(
      'select',
      {},
      h('option', { value: '' }, spec.default !== undefined ? `(default: ${spec.default})` : '(not set)'),
      spec.enum.map((choice) => h('option', { value: String(choice), selected: value === choice }, String(choice))),
    );
  }
  if (type === 'boolean') {
    return h('input', { type: 'checkbox', checked: value ?? spec.default ?? false });
  }
  if (type === 'integer' || type === 'number') {
    return h('input', {
      type: 'number',
      inputmode: type === 'integer' ? 'numeric' : 'decimal',
      step: type === 'integer' ? 1 : 'any',
      min: spec.minimum,
      max: spec.maximum,
      placeholder: spec.default !== undefined ? String(spec.default) : null,
      value: value ?? '',
    });
  }
  if (type === 'string') {
    const long = (spec.maxLength ?? 0) > 200;
    const attrs = {
      minlength: spec.minLength,
      maxlength: spec.maxLength,
      placeholder: spec.default !== undefined ? String(spec.default) : null,
      value: value ?? '',
    };
    return long ? h('textarea', { rows: 3, ...attrs }) : h('input', { type: 'text', ...attrs });
  }
  // Objects, arrays and anything else: JSON text.
  return h('textarea', {
    rows: 3,
    class: 'code',
    spellcheck: 'false',
    placeholder: type === 'array' ? '[]' : '{}',
    value: value === undefined ? '' : JSON.stringify(value, null, 2),
  });
}

/**
 * `schemaForm(schema, { idPrefix, values })` → { element, read, showErrors, clearErrors }.
 * `read()` returns { params, errors }: `errors` maps a property to the message of a value
 * that can't be read (JSON that does not parse); the rest is the server's to judge.
 */
export function schemaForm(schema, { idPrefix = 'param', values = {} } = {}) {
  const properties = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  const controls = new Map();
  const element = h('div', { class: 'schema-form', dataset: { testid: 'params-form' } });
  const names = Object.keys(properties);
  if (!names.length) {
    element.append(h('p', { class: 'muted' }, 'This action takes no parameters.'));
  }
  for (const name of names) {
    const spec = properties[name] ?? {};
    const control = controlFor(spec, values[name]);
    control.name = name;
    control.dataset.testid = `${idPrefix}-${name}`;
    controls.set(name, { control, spec });
    const id = `${idPrefix}-${name}`;
    const hint = hintFor(spec);
    const wrapper = field({ id, label: spec.title ?? humanize(name), control, hint, required: required.has(name) });
    if (typeOf(spec) === 'boolean') wrapper.classList.add('field-checkbox');
    element.append(wrapper);
  }
  // Keys in `values` the schema does not describe (an action changed since) stay editable.
  const extra = Object.fromEntries(Object.entries(values).filter(([key]) => !(key in properties)));
  let extraControl = null;
  if (schema?.additionalProperties !== false || Object.keys(extra).length) {
    extraControl = h('textarea', { rows: 2, class: 'code', spellcheck: 'false', placeholder: '{}', value: Object.keys(extra).length ? JSON.stringify(extra, null, 2) : '' });
    element.append(field({ id: `${idPrefix}--extra`, label: 'Other params (JSON)', control: extraControl, hint: 'Keys the action takes beyond those above.' }));
  }

  function read() {
    const params = {};
    const errors = {};
    for (const [name, { control, spec }] of controls) {
      const type = typeOf(spec);
      if (type === 'boolean' && !spec.enum) {
        const fallback = spec.default ?? false;
        if (control.checked !== fallback || name in values) params[name] = control.checked;
        continue;
      }
      const raw = control.value.trim();
      if (raw === '') continue;
      if (spec.enum) {
        const match = spec.enum.find((choice) => String(choice) === raw);
        params[name] = match === undefined ? raw : match;
      } else if (type === 'integer' || type === 'number') {
        const number = Number(raw);
        params[name] = Number.isFinite(number) ? number : raw;
      } else if (type === 'string') {
        params[name] = control.value;
      } else {
        try {
          params[name] = JSON.parse(raw);
        } catch {
          errors[name] = 'Not valid JSON.';
        }
      }
    }
    if (extraControl && extraControl.value.trim()) {
      try {
        const more = JSON.parse(extraControl.value);
        if (more && typeof more === 'object' && !Array.isArray(more)) Object.assign(params, more);
        else errors['-extra'] = 'Write a JSON object.';
      } catch {
        errors['-extra'] = 'Not valid JSON.';
      }
    }
    return { params, errors };
  }

  /** Show `fields` (the API's `fields.params`, or read()'s errors); returns the messages
   * for keys that have no control here, for the form to show above. */
  function showErrors(fields) {
    const rest = [];
    for (const [name, messages] of Object.entries(fields ?? {})) {
      const text = flatten(messages);
      if (controls.has(name)) setFieldError(`${idPrefix}-${name}`, text);
      else if (name === '-extra' && extraControl) setFieldError(`${idPrefix}--extra`, text);
      else if (extraControl) setFieldError(`${idPrefix}--extra`, `${name}: ${text}`);
      else rest.push(`${name}: ${text}`);
    }
    return rest;
  }

  function clearErrors() {
    for (const name of controls.keys()) setFieldError(`${idPrefix}-${name}`, null);
    if (extraControl) setFieldError(`${idPrefix}--extra`, null);
  }

  return { element, read, showErrors, clearErrors };
}

/** The API's messages for a field (a list, or an object of nested fields) as one line. */
export function flatten(messages) {
  if (Array.isArray(messages)) return messages.map(flatten).join(' ');
  if (messages && typeof messages === 'object') {
    return Object.entries(messages).map(([key, value]) => `${key}: ${flatten(value)}`).join('; ');
  }
  return String(messages ?? '');
}
