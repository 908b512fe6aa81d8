// A script that fails to load or throws reports it, instead of leaving the test to time out.
function reportError(message) {
  const pre = document.getElementById('result');
  if (!pre || pre.dataset.state === 'done') return;
  pre.textContent = JSON.stringify({ ok: false, error: { name: 'PageError', message } });
  pre.dataset.state = 'done';
}
window.addEventListener('error', (event) =>
  reportError(event.message || `could not load ${event.target?.src ?? 'a script'}`),
  true,
);
window.addEventListener('unhandledrejection', (event) => reportError(String(event.reason)));
