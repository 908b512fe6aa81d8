// The login form: POST /@login, then the page the address asked for.

import { h, fill, field } from '../dom.js';
import { notice, errorText } from '../ui.js';

export function loginView(main, { session, reason, done }) {
  const login = h('input', { type: 'text', name: 'login', autocomplete: 'username', autocapitalize: 'none', dataset: { testid: 'login-name' } });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', dataset: { testid: 'login-password' } });
  const message = h('div', { class: 'form-message', 'aria-live': 'polite' });
  if (reason) message.append(notice('info', reason, 'login-reason'));
  const submit = h('button', { type: 'submit', class: 'button primary', dataset: { testid: 'login-submit' } }, 'Log in');
  const form = h(
    'form',
    { class: 'card login', id: 'login-form', dataset: { testid: 'login-form' }, novalidate: true },
    h('h1', { tabindex: '-1' }, 'Log in to nick-jobs'),
    message,
    field({ id: 'login-name', label: 'Login', control: login, required: true }),
    field({ id: 'login-password', label: 'Password', control: password, required: true }),
    h('div', { class: 'actions' }, submit),
    h('p', { class: 'hint' }, 'Your token stays in this tab only, and ends when you log out or close it.'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!login.value || !password.value) {
      fill(message, notice('error', 'Give your login and your password.', 'login-error'));
      (login.value ? password : login).focus();
      return;
    }
    submit.disabled = true;
    fill(message);
    try {
      await session.logIn(login.value.trim(), password.value);
      password.value = '';
      done();
    } catch (error) {
      fill(message, notice('error', errorText(error), 'login-error'));
      password.select();
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  fill(main, form);
  (reason ? form.querySelector('h1') : login).focus();
}
