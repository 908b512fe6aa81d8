// What every test page shares: the JS client (served by the test's origin server at
// /nick-jobs-client.js), the page's query, and the <pre id="result"> the test reads.
import Client, { NickJobsError } from '/nick-jobs-client.js';

export { Client, NickJobsError };

export const query = new URLSearchParams(location.search);

/** The client for the API named by the page's `api` parameter (an absolute URL). */
export function client() {
  return Client.initialize({ apiPath: query.get('api') });
}

/** Writes `value` as the page's result; the test waits for data-state="done". */
export function report(value) {
  const pre = document.getElementById('result');
  if (pre.dataset.state === 'done') return;
  pre.textContent = JSON.stringify(value, null, 2);
  pre.dataset.state = 'done';
}

/** Shows the test how far a scenario got (data-state), so it can act in between. */
export function progress(state) {
  document.getElementById('result').dataset.state = state;
}

/** An error as JSON: a NickJobsError's status, type and body, or any error's name. */
export function describe(error) {
  return {
    name: error?.name ?? null,
    message: String(error?.message ?? error),
    status: error?.status ?? null,
    type: error?.type ?? null,
    body: error?.body ?? null,
    cause: error?.cause ? String(error.cause) : null,
  };
}

/** Runs the scenario the `scenario` parameter names, and reports what it returns. */
export async function run(scenarios) {
  const name = query.get('scenario');
  document.title = `${document.title}: ${name}`;
  try {
    const scenario = scenarios[name];
    if (!scenario) throw new Error(`no scenario ${name}`);
    report({ ok: true, ...(await scenario()) });
  } catch (error) {
    report({ ok: false, error: describe(error) });
  }
}

/** Resolves with `promise`'s value, or `{ rejected: describe(error) }`. */
export async function settle(promise) {
  try {
    return { resolved: await promise };
  } catch (error) {
    return { rejected: describe(error) };
  }
}
