// Shared by openai.mjs and ollama.mjs: read the plan clients_test.go sends on
// standard input, run its steps one after another, print one JSON result.
//
// The plan: {"steps": [{"name", "base", "key", "op", "model", ...}]}. Keys
// come on standard input, never in argv, so they do not show in ps. The
// result never repeats a key.

import { readFile } from 'node:fs/promises';

// now is the wall-clock time in milliseconds (fractional), comparable with
// the Go test's time.Now().
export const now = () => performance.timeOrigin + performance.now();

export async function readPlan() {
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) text += chunk;
  return JSON.parse(text);
}

// recordingFetch wraps the global fetch: every HTTP attempt the SDK makes
// (retries included) is recorded with its status, the retry headers and, for
// a refusal, the body exactly as the gateway sent it.
export function recordingFetch(attempts) {
  return async (url, init) => {
    const sent = now();
    const res = await fetch(url, init);
    const a = {
      sent,
      status: res.status,
      content_type: res.headers.get('content-type'),
      retry_after: res.headers.get('retry-after'),
      retry_after_ms: res.headers.get('retry-after-ms'),
      should_retry: res.headers.get('x-should-retry'),
    };
    if (res.status >= 400) a.body = await res.clone().text();
    a.answered = now();
    attempts.push(a);
    return res;
  };
}

// describeError keeps what an application would look at on an SDK exception.
export function describeError(err) {
  const e = { name: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err) };
  for (const f of ['status', 'status_code', 'code', 'type', 'param']) {
    if (err && err[f] !== undefined) e[f] = err[f];
  }
  if (err && 'param' in err) e.has_param = true;
  if (err && 'error' in err) e.error = err.error;
  return e;
}

// runSteps runs each step with run(step, fetch, chunk) and prints the
// results. await chunk(text) records a streamed chunk's arrival and, when the
// step has an ack URL, tells the test's upstream (straight, not through the
// gateway) that the client has it: the upstream sends the next chunk only
// then. pkg names the SDK, whose installed version the result reports.
export async function runSteps(pkg, run) {
  const { version } = JSON.parse(await readFile(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8'));
  const plan = await readPlan();
  const results = [];
  for (const step of plan.steps) {
    const attempts = [];
    const chunks = [];
    const r = { name: step.name, start: now(), attempts, chunks };
    try {
      r.content = await run(step, recordingFetch(attempts), async (text) => {
        chunks.push({ t: now(), text });
        if (step.ack) {
          const res = await fetch(step.ack, { method: 'POST' });
          await res.arrayBuffer();
        }
      });
      r.ok = true;
    } catch (err) {
      r.ok = false;
      r.error = describeError(err);
    }
    r.end = now();
    results.push(r);
  }
  process.stdout.write(JSON.stringify({ node: process.version, sdk: `${pkg}@${version}`, results }) + '\n');
}
