// The dashboard: a page of hash routes (#/jobs, #/jobs/<uuid>, #/submit, #/schedules,
// #/overview) over the JavaScript client, so the server serves files and nothing else.

import { h, fill } from './js/dom.js';
import { Session } from './js/session.js';
import { notice } from './js/ui.js';
import { loginView } from './js/views/login.js';
import { jobsView } from './js/views/jobs.js';
import { jobView } from './js/views/job.js';
import { submitView } from './js/views/submit.js';
import { schedulesView } from './js/views/schedules.js';
import { overviewView } from './js/views/overview.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const user = document.getElementById('user');

const ROUTES = [
  { pattern: /^\/jobs\/?$/, view: jobsView, name: 'jobs' },
  { pattern: /^\/jobs\/([0-9a-fA-F-]{36})$/, view: jobView, name: 'jobs', keys: ['uuid'] },
  { pattern: /^\/submit\/?$/, view: submitView, name: 'submit' },
  { pattern: /^\/schedules\/?$/, view: schedulesView, name: 'schedules' },
  { pattern: /^\/schedules\/(new)$/, view: schedulesView, name: 'schedules', keys: ['edit'] },
  { pattern: /^\/schedules\/([a-z0-9_-]{1,100})$/, view: schedulesView, name: 'schedules', keys: ['edit'] },
  { pattern: /^\/overview\/?$/, view: overviewView, name: 'overview' },
];

/** '#/jobs?status=failed' → { path: '/jobs', query: URLSearchParams }. */
function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/jobs';
  const [path, search = ''] = raw.split('?');
  return { path, query: new URLSearchParams(search) };
}

export function navigate(path, query) {
  const search = query && [...query].length ? `?${new URLSearchParams(query)}` : '';
  const target = `#${path}${search}`;
  if (location.hash === target) render();
  else location.hash = target;
}

/** Change the query of the current route without a new history entry or a re-render. */
export function replaceQuery(query) {
  const { path } = parseHash();
  const search = [...query].length ? `?${query}` : '';
  history.replaceState(null, '', `#${path}${search}`);
}

let session;
let current = null; // { controller, key }

function showChrome(loggedIn) {
  nav.hidden = !loggedIn;
  user.hidden = !loggedIn;
  document.getElementById('nav-schedules').hidden = !(loggedIn && session.isAdmin);
  if (loggedIn) {
    document.getElementById('user-name').textContent = session.fullname;
    document.getElementById('user-name').title = `Logged in as ${session.login}${session.isAdmin ? ' (administrator)' : ''}`;
  }
}

function stopCurrent() {
  current?.controller.abort();
  current = null;
}

async function render({ reason } = {}) {
  stopCurrent();
  const controller = new AbortController();
  current = { controller };
  if (!session.loggedIn) {
    showChrome(false);
    document.title = 'Log in · nick-jobs';
    loginView(main, { session, reason, signal: controller.signal, done: () => start() });
    return;
  }
  showChrome(true);
  const { path, query } = parseHash();
  const route = ROUTES.find((candidate) => candidate.pattern.test(path));
  for (const link of nav.querySelectorAll('a')) {
    if (route && link.dataset.route === route.name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!route) {
    fill(main, h('h1', {}, 'Not found'), notice('error', `There is no page ${path}.`), h('p', {}, h('a', { href: '#/jobs' }, 'Go to the jobs')));
    return;
  }
  const match = path.match(route.pattern);
  const params = Object.fromEntries((route.keys ?? []).map((key, index) => [key, match[index + 1]]));
  main.replaceChildren();
  try {
    await route.view(main, { session, params, query, signal: controller.signal, navigate, replaceQuery });
  } catch (error) {
    if (controller.signal.aborted || !session.loggedIn) return;
    main.append(notice('error', `This page failed: ${error.message ?? error}`));
    throw error;
  }
}

async function start() {
  if (session.loggedIn) {
    session.scheduleRenew();
    await session.learnRole();
  }
  if (!session.loggedIn) return render();
  // Focus moves to the page's content on each route, so keyboard users start there.
  render().then(() => main.querySelector('h1')?.focus?.());
}

async function boot() {
  // Where the API is, relative to this page (the server knows the dashboard's path).
  let apiRoot = '../';
  try {
    const response = await fetch('./config.json', { headers: { Accept: 'application/json' } });
    if (response.ok) apiRoot = (await response.json()).apiRoot ?? apiRoot;
  } catch {
    // The default holds for the default path, /dashboard/.
  }
  const apiPath = new URL(apiRoot, new URL('./', location.href)).href;
  session = new Session(apiPath);
  session.addEventListener('ended', (event) => render({ reason: event.detail.reason }));
  document.getElementById('logout').addEventListener('click', () => session.logOut());
  document.getElementById('skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', () => render().then(() => main.querySelector('h1')?.focus?.()));
  await start();
}

boot();
