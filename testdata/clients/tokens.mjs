// Drives routes with tokens (token budgets) with the official openai and
// ollama packages, for tokens_clients_test.go. Steps come one JSON line at
// a time on standard input (keys never in argv):
//   {"sdk": "openai"|"ollama", "op", "base", "key", "model", "max_tokens"}
// and for each, once its call ended, one JSON line is printed: {"ok",
// "content", "usage", "chunks", "usage_chunks", "attempts", "error"}; the
// test checks the gateway between steps. Besides what the Go test checks, the
// script asserts what only a client sees: a stream the client did not ask
// usage for has no chunk with usage (and content arrives); one that asked
// has exactly one usage chunk. The result never repeats the key.
//
// Ops: openai "chat", "chat_stream", "chat_stream_usage", "chat_refused";
// ollama "chat", "chat_stream", "generate", "generate_stream".
import OpenAI from 'openai';
import { Ollama } from 'ollama';
import { createInterface } from 'node:readline';
import { describeError } from './lib.mjs';

let step;
let attempts;
// countingFetch records every HTTP attempt the SDK makes (retries included).
const countingFetch = async (url, init) => {
  const res = await fetch(url, init);
  attempts.push({
    status: res.status,
    ratelimit_remaining: res.headers.get('x-ratelimit-remaining'),
    retry_after: res.headers.get('retry-after'),
    should_retry: res.headers.get('x-should-retry'),
    ...(res.status >= 400 ? { body: await res.clone().text() } : {}),
  });
  return res;
};

function fail(message) {
  throw new Error(`assertion: ${message}`);
}

async function openai() {
  const client = new OpenAI({ apiKey: step.key, baseURL: step.base, fetch: countingFetch, timeout: 15_000 });
  const req = { model: step.model, messages: [{ role: 'user', content: 'say hello' }], max_tokens: step.max_tokens };
  switch (step.op) {
    case 'chat':
    case 'chat_refused': {
      const c = await client.chat.completions.create(req);
      return { content: c.choices[0].message.content, usage: c.usage ?? null };
    }
    case 'chat_stream': {
      const stream = await client.chat.completions.create({ ...req, stream: true });
      let content = '';
      let chunks = 0;
      for await (const c of stream) {
        chunks++;
        // The gateway asked the upstream for usage on the client's behalf:
        // the usage chunk must not reach a client that did not ask.
        if (c.usage != null) fail(`chunk ${chunks} has usage ${JSON.stringify(c.usage)}; the client did not ask for it`);
        if (!Array.isArray(c.choices) || c.choices.length === 0) fail(`chunk ${chunks} has no choices (a usage chunk?)`);
        content += c.choices[0].delta?.content ?? '';
      }
      if (content === '') fail('no content arrived');
      return { content, chunks, usage_chunks: 0, usage: null };
    }
    case 'chat_stream_usage': {
      const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
      let content = '';
      let chunks = 0;
      const usages = [];
      for await (const c of stream) {
        chunks++;
        if (c.usage != null) usages.push(c.usage);
        content += c.choices?.[0]?.delta?.content ?? '';
      }
      if (content === '') fail('no content arrived');
      if (usages.length !== 1) fail(`${usages.length} usage chunks, want exactly 1`);
      return { content, chunks, usage_chunks: usages.length, usage: usages[0] };
    }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
}

async function ollama() {
  const client = new Ollama({ host: step.base, fetch: countingFetch, headers: { Authorization: `Bearer ${step.key}` } });
  const options = step.max_tokens ? { num_predict: step.max_tokens } : undefined;
  const chat = step.op.startsWith('chat');
  const stream = step.op.endsWith('_stream');
  const req = chat
    ? { model: step.model, messages: [{ role: 'user', content: 'say hello' }], stream, options }
    : { model: step.model, prompt: 'say hello', stream, options };
  const call = chat ? (r) => client.chat(r) : (r) => client.generate(r);
  const text = (part) => (chat ? part.message.content : part.response);
  const counts = (part) => ({ prompt_tokens: part.prompt_eval_count ?? null, completion_tokens: part.eval_count ?? null });
  if (!stream) {
    const part = await call(req);
    return { content: text(part), usage: counts(part) };
  }
  let content = '';
  let chunks = 0;
  let last = null;
  for await (const part of await call(req)) {
    chunks++;
    content += text(part);
    last = part;
  }
  if (content === '') fail('no content arrived');
  if (!last?.done) fail('the stream did not end with done: true');
  return { content, chunks, usage: counts(last) };
}

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === '') continue;
  step = JSON.parse(line);
  attempts = [];
  const out = { sdk: step.sdk, op: step.op, attempts };
  try {
    Object.assign(out, await (step.sdk === 'openai' ? openai() : ollama()));
    out.ok = true;
  } catch (err) {
    out.ok = false;
    out.error = describeError(err);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
