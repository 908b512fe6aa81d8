// Starts a real nick-jobs server for the tests: a generated ini with a temporary SQLite
// file, the embedded stub:// broker with worker threads, and a free port.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BIN = process.env.NICK_JOBS_BIN ?? join(ROOT, '.venv', 'bin');

export const USERS = {
  admin: 'admin-password',
  alice: 'alice-password',
  // Only for the logout test: tokens issued to one user in the same second are identical
  // (no jti claim), so logging out one of them would log out the others too.
  carol: 'carol-password',
  // A consumer's user: role Worker (permission Run Jobs), as a real consumer has.
  worker: 'worker-password',
};

const ROLES = { admin: ['Administrator'], worker: ['Worker'] };

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

async function waitUntilUp(url, proc, output, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) {
      throw new Error(`pserve exited with ${proc.exitCode}:\n${output.join('')}`);
    }
    try {
      const response = await fetch(`${url}/@jobs`);
      if (response.status === 401) return;
    } catch {
      // not listening yet
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  throw new Error(`nick-jobs did not answer on ${url} in ${timeoutMs} ms:\n${output.join('')}`);
}

/**
 * A server for one test file. `settings` adds ini lines to [app:main], e.g.
 * `{ 'nick_jobs.stream_max_lifetime': '0.7' }`; `prefix` ('/api') serves the API under
 * that path (waitress's url_prefix, the SCRIPT_NAME). `url` is the server's origin.
 */
export async function startServer({ settings = {}, prefix = '' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'nick-jobs-js-'));
  const port = await freePort();
  const ini = join(dir, 'test.ini');
  writeFileSync(
    ini,
    [
      '[app:main]',
      'use = egg:nick-jobs',
      'nick_jobs.environment = testing',
      `sqlalchemy.url = sqlite:///${join(dir, 'jobs.sqlite')}`,
      'nick_jobs.broker_url = stub://',
      'nick_jobs.embedded_worker_threads = 2',
      'nick_jobs.worker_timeout_ms = 50',
      `nick_jobs.jwt_secret = js-client-tests-${'x'.repeat(40)}`,
      'nick_jobs.auto_migrate = false',
      'nick_jobs.bootstrap_admin = false',
      'nick_jobs.login_rate_limit = 1000',
      'nick_jobs.default_page_size = 2',
      // Reconnections after a dropped stream wait this long: short, for quick tests.
      'nick_jobs.stream_retry_ms = 100',
      ...Object.entries(settings).map(([key, value]) => `${key} = ${value}`),
      '',
      '[server:main]',
      'use = egg:waitress#main',
      `listen = 127.0.0.1:${port}`,
      // Each open event stream holds a waitress thread; plain requests need some too.
      'threads = 16',
      ...(prefix ? [`url_prefix = ${prefix}`] : []),
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  for (const name of ['NICK_JOBS_DATABASE_URL', 'NICK_JOBS_BROKER_URL', 'NICK_JOBS_JWT_SECRET']) {
    delete env[name];
  }
  const cli = join(BIN, 'nick-jobs');
  await run(cli, ['migrate', ini], { env });
  await Promise.all(
    Object.entries(USERS).map(([login, password]) => {
      const roles = (ROLES[login] ?? []).flatMap((role) => ['--role', role]);
      return run(cli, ['users', 'add', ini, login, '--password', password, ...roles], { env });
    }),
  );

  const output = [];
  const proc = spawn(join(BIN, 'pserve'), [ini], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.on('data', (chunk) => output.push(String(chunk)));
  proc.stderr.on('data', (chunk) => output.push(String(chunk)));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitUntilUp(url + prefix, proc, output);
  } catch (error) {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url,
    output,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((ok) => proc.once('exit', ok));
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls the job until its status is one of `wanted`; fails at the deadline. */
export async function waitForStatus(client, token, id, wanted, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let job;
  while (Date.now() < deadline) {
    ({ data: job } = await client.getJob({ token, params: { id } }));
    if (wanted.includes(job.status)) return job;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  throw new Error(`job ${id} did not reach ${wanted} in ${timeoutMs} ms: ${JSON.stringify(job)}`);
}

/** The error `promise` rejects with; fails the test when it resolves. */
export async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to reject');
}
