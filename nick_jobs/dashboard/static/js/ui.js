// Pieces every view uses: status badges, progress bars, notices, the confirmation dialog.

import { h, fill } from './dom.js';

export function statusBadge(status) {
  return h('span', { class: `badge status-${status}`, dataset: { testid: 'status', status } }, status);
}

/** A bar for `progress` (the job's, or null): percent, and the message as its label. */
export function progressBar(progress, { status } = {}) {
  const percent = progress && Number.isFinite(progress.percent) ? progress.percent : null;
  const shown = percent ?? (status === 'completed' ? 100 : 0);
  const bar = h('span', { class: 'progress-fill' });
  // CSSOM, not a style attribute: the Content-Security-Policy allows no inline style.
  bar.style.width = `${Math.max(0, Math.min(100, shown))}%`;
  const label = percent === null ? (status === 'completed' ? 'done' : '') : `${Math.round(percent)}%`;
  return h(
    'span',
    {
      class: `progress status-${status ?? 'none'}`,
      role: 'progressbar',
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': Math.round(shown),
      'aria-label': progress?.message ? `Progress: ${progress.message}` : 'Progress',
      dataset: { testid: 'progress', percent: String(Math.round(shown)) },
      title: progress?.message ?? '',
    },
    h('span', { class: 'progress-track' }, bar),
    h('span', { class: 'progress-label' }, label),
  );
}

/** A message box: kind is 'error', 'info' or 'success'. */
export function notice(kind, message, testid = 'notice') {
  return h(
    'div',
    { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { testid } },
    message,
  );
}

/** The API's error as a sentence: its type and message, and the job's state for a 409. */
export function errorText(error) {
  if (!error) return '';
  const body = error.body?.error;
  if (!body) return error.message ?? String(error);
  const state = body.status ? ` (the job is ${body.status})` : '';
  return `${body.type}: ${body.message}${state}`;
}

const toasts = () => document.getElementById('toasts');

/** A short-lived message in the corner, read out by screen readers. */
export function toast(message, kind = 'info') {
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { testid: 'toast' } }, message);
  toasts().append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

/**
 * Ask before something that can't be undone. Resolves to true when confirmed. The dialog
 * is modal (focus stays in it, Escape cancels) and starts on Cancel.
 */
export function confirmAction({ title, message, confirm = 'Confirm', danger = true }) {
  const dialog = document.getElementById('confirm-dialog');
  fill(dialog.querySelector('[data-slot=title]'), title);
  fill(dialog.querySelector('[data-slot=message]'), message);
  const ok = dialog.querySelector('[data-slot=ok]');
  ok.textContent = confirm;
  ok.className = danger ? 'button danger' : 'button primary';
  return new Promise((resolve) => {
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    dialog.querySelector('[data-slot=cancel]').focus();
  });
}

/** Empty cells and missing values read the same everywhere. */
export const DASH = '—';
