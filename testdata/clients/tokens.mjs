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
// Ops: openai "chat", "chat_stream", "chat_stream_usage", "chat_refused",
// "responses", "responses_stream" (responses.stream: its final response must
// carry the usage), "completions", "completions_stream", "embeddings";
// ollama "chat", "chat_stream", "generate", "generate_stream", "embed".
// "usage" is always {prompt_tokens, completion_tokens}, whatever the API
// calls them (the Responses API's input_tokens/output_tokens, an embedding's
// prompt tokens with completion 0).
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
    case 'responses': {
      const r = await client.responses.create({ model: step.model, input: 'say hello', max_output_tokens: step.max_tokens });
      return { content: r.output_text, usage: responseUsage(r.usage) };
    }
    case 'responses_stream': {
      const stream = client.responses.stream({ model: step.model, input: 'say hello', max_output_tokens: step.max_tokens });
      let content = '';
      let chunks = 0;
      for await (const event of stream) {
        chunks++;
        if (event.type === 'response.output_text.delta') content += event.delta;
      }
      const final = await stream.finalResponse();
      if (final.status !== 'completed') fail(`the final response is ${final.status}`);
      if (final.output_text !== content) fail(`the final text ${JSON.stringify(final.output_text)} is not the deltas' ${JSON.stringify(content)}`);
      if (final.usage == null) fail('the final response has no usage');
      return { content, chunks, usage: responseUsage(final.usage) };
    }
    case 'completions': {
      const c = await client.completions.create({ model: step.model, prompt: 'say hello', max_tokens: step.max_tokens });
      return { content: c.choices[0].text, usage: c.usage ?? null };
    }
    case 'completions_stream': {
      const stream = await client.completions.create({ model: step.model, prompt: 'say hello', max_tokens: step.max_tokens, stream: true });
      let content = '';
      let chunks = 0;
      for await (const c of stream) {
        chunks++;
        // As for chat: usage the client did not ask for must not arrive.
        if (c.usage != null) fail(`chunk ${chunks} has usage ${JSON.stringify(c.usage)}; the client did not ask for it`);
        content += c.choices?.[0]?.text ?? '';
      }
      if (content === '') fail('no content arrived');
      return { content, chunks, usage: null };
    }
    case 'embeddings': {
      const e = await client.embeddings.create({ model: step.model, input: 'say hello' });
      const v = e.data?.[0]?.embedding;
      if (!Array.isArray(v) || v.length !== 2 || v[0] !== 0.5 || v[1] !== 0.25) fail(`embedding ${JSON.stringify(v)}, want [0.5, 0.25]`);
      return { content: '', usage: { prompt_tokens: e.usage.prompt_tokens, completion_tokens: e.usage.total_tokens - e.usage.prompt_tokens } };
    }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
}

// responseUsage is a Responses API usage in chat's names.
function responseUsage(u) {
  return u == null ? null : { prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens };
}

async function ollama() {
  const client = new Ollama({ host: step.base, fetch: countingFetch, headers: { Authorization: `Bearer ${step.key}` } });
  const options = step.max_tokens ? { num_predict: step.max_tokens } : undefined;
  if (step.op === 'embed') {
    const e = await client.embed({ model: step.model, input: 'say hello' });
    const v = e.embeddings?.[0];
    if (!Array.isArray(v) || v.length !== 2) fail(`embeddings ${JSON.stringify(e.embeddings)}`);
    return { content: '', usage: { prompt_tokens: e.prompt_eval_count ?? null, completion_tokens: 0 } };
  }
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
