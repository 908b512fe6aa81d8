#!/usr/bin/env node
// A consumer of the remote action `reindex` (actions.yaml): claims its jobs and reindexes
// a stand-in catalog batch by batch, reporting its progress and a log line per batch.
//
//   NICK_JOBS_URL=http://localhost:8080 NICK_JOBS_TOKEN=... node reindex.mjs
//
// NICK_JOBS_TOKEN is a token of a user with the role Worker (`nick-jobs tokens create`).
// REINDEX_CONCURRENCY (1) jobs run at once; REINDEX_WAIT (5) is how many seconds a claim
// waits on the server for a job to come. SIGTERM or Ctrl-C stops it: no more claims (the
// one waiting is let answer, within REINDEX_WAIT), the running jobs get REINDEX_GRACE (30)
// seconds to end and are handed back after that, and it exits 0.
// Node.js 18 or later; no dependency but the repository's JavaScript client.

import { setTimeout as sleep } from 'node:timers/promises';

import Client from '../../clients/js/index.js';

const DEFAULT_BATCH_SIZE = 100;
const DEFAULT_OBJECTS = 1000;
// What one batch costs the stand-in index: enough for the progress to be seen moving.
const BATCH_MS = 20;
const SECTIONS = ['news', 'events', 'people', 'pages'];

/** The content paths of a site, the same on every run: what a CMS's catalog would list. */
function catalog(site, objects) {
  return Array.from({ length: objects }, (_, i) => {
    const section = SECTIONS[i % SECTIONS.length];
    return `/${site}/${section}/item-${String(i + 1).padStart(6, '0')}`;
  });
}

/**
 * Sends one batch of paths to the search index. A stand-in: a real one would read each
 * object and post it to the search engine, passing `signal` to its requests so that an
 * aborted job stops at once.
 */
async function indexBatch(paths, signal) {
  try {
    await sleep(BATCH_MS, undefined, { signal });
  } catch (error) {
    // The signal's reason, JobAborted or JobStopped, rather than the timer's AbortError:
    // work() reports a job stopped only when JobStopped is what its handler throws.
    signal.throwIfAborted();
    throw error;
  }
  return paths.length;
}

/** The handler of one `reindex` job; a resumed job starts at its checkpoint's batch. */
async function reindex(job, ctx) {
  const { site, batch_size: size = DEFAULT_BATCH_SIZE, objects = DEFAULT_OBJECTS } = job.params;
  const paths = catalog(site, objects);
  const batches = Math.ceil(paths.length / size);
  let batch = ctx.checkpoint?.batch ?? 0;
  console.log(`${job.uuid}: reindexing ${site}, ${paths.length} objects in ${batches} batches`);
  if (batch > 0) ctx.log(`resuming at batch ${batch + 1} of ${batches}`);
  for (; batch < batches; batch += 1) {
    // Throws JobAborted (aborted, or handed back at shutdown) or JobStopped (a stop
    // request): the latter reports the job stopped with the checkpoint saved below.
    ctx.check();
    const chunk = paths.slice(batch * size, (batch + 1) * size);
    const indexed = await indexBatch(chunk, ctx.signal);
    ctx.saveCheckpoint({ batch: batch + 1 });
    ctx.progress(Math.floor(((batch + 1) * 100) / batches), `batch ${batch + 1} of ${batches}`);
    ctx.log(`batch ${batch + 1} of ${batches}: ${indexed} objects indexed, up to ${chunk.at(-1)}`);
  }
  if (batches === 0) ctx.progress(100, 'nothing to index');
  console.log(`${job.uuid}: ${site} reindexed`);
  // The whole catalog is indexed once the last batch is, whichever attempt did the rest.
  return { indexed: paths.length, batches };
}

function setting(name, fallback) {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} is a number of 0 or more, not ${JSON.stringify(text)}`);
  }
  return value;
}

async function main() {
  const url = process.env.NICK_JOBS_URL || 'http://localhost:8080';
  const token = process.env.NICK_JOBS_TOKEN;
  if (!token) {
    console.error('reindex: set NICK_JOBS_TOKEN to a token of a user with the role Worker');
    return 2;
  }
  const concurrency = setting('REINDEX_CONCURRENCY', 1);
  // Short, so that a signal stops an idle consumer within seconds; a longer wait only
  // saves the claims an idle consumer makes meanwhile, one every few seconds.
  const wait = setting('REINDEX_WAIT', 5);
  const grace = setting('REINDEX_GRACE', 30);

  const client = Client.initialize({ apiPath: url, timeout: 15000 });
  const controller = new AbortController();
  const stop = (name) => {
    if (controller.signal.aborted) {
      // A second signal does not wait: the jobs still held go to another attempt when
      // their lease runs out.
      console.error(`reindex: ${name} again: exiting now`);
      process.exit(1);
    }
    console.error(`reindex: ${name}: no more claims; the running jobs have ${grace} s to end`);
    controller.abort();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  console.log(`reindex: claiming reindex jobs from ${url}`);
  try {
    await client.work(['reindex'], reindex, {
      token,
      concurrency,
      wait,
      grace: grace * 1000,
      signal: controller.signal,
      onError: (error, job) => console.error(`reindex: job ${job?.uuid ?? '-'}: ${error.message}`),
    });
  } catch (error) {
    // A claim refused for good: a wrong token (401), a user without Run Jobs (403), or
    // no remote action named reindex (400: apply actions.yaml first).
    console.error(`reindex: ${error.message}`);
    return 1;
  }
  console.log('reindex: stopped');
  return 0;
}

process.exitCode = await main();
