// Drives one call per client library at a request no retry can pass (a
// reservation larger than a whole token budget), for
// unretryable_clients_test.go. Steps come one JSON line at a time on standard
// input (keys never in argv):
//   {"client", "base", "key", "model", "max_tokens", "deadline_ms"}
// and for each, once its call ended, one JSON line is printed:
//   {"client", "version", "ok", "error", "attempts", "elapsed_ms", "after_answer_ms"}
// attempts are the HTTP requests the client made, retries included (a
// fetch wrapper records each answer); the test checks the gateway between
// steps. A call still retrying at deadline_ms is aborted, so a client that
// would retry for minutes ends the step, with its attempts so far, instead of
// hanging the test; an attempt the abort stopped never reaches the gateway.
// The result never repeats the key.
//
// Clients:
//   openai7, openai6         chat.completions.create (npm openai 7 and 6)
//   ollama                   chat (npm ollama)
//   ai-openai                generateText with @ai-sdk/openai's default
//                            model (the Responses API)
//   ai-openai-chat           generateText with @ai-sdk/openai's .chat()
//   ai-openai-compatible     generateText with @ai-sdk/openai-compatible
//   langchain                @langchain/openai ChatOpenAI.invoke
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import OpenAI7 from 'openai';
import OpenAI6 from 'openai6';
import { Ollama } from 'ollama';
import { generateText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI } from '@langchain/openai';
import { describeError, now } from './lib.mjs';

const version = (pkg) => JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8')).version;

const packages = {
  openai7: 'openai',
  openai6: 'openai6',
  ollama: 'ollama',
  'ai-openai': '@ai-sdk/openai',
  'ai-openai-chat': '@ai-sdk/openai',
  'ai-openai-compatible': '@ai-sdk/openai-compatible',
  langchain: '@langchain/openai',
};

// call makes the client's one call; fetch records attempts and stops any
// attempt after the deadline, signal is the deadline for clients that take
// one.
async function call(step, fetch, signal) {
  const messages = [{ role: 'user', content: 'say hello' }];
  const prompt = 'say hello';
  switch (step.client) {
    case 'openai7':
    case 'openai6': {
      const OpenAI = step.client === 'openai7' ? OpenAI7 : OpenAI6;
      const client = new OpenAI({ apiKey: step.key, baseURL: step.base, fetch, timeout: 60_000 });
      return client.chat.completions.create({ model: step.model, messages, max_tokens: step.max_tokens }, { signal });
    }
    case 'ollama': {
      const client = new Ollama({ host: step.base, fetch, headers: { Authorization: `Bearer ${step.key}` } });
      return client.chat({ model: step.model, messages, stream: false, options: { num_predict: step.max_tokens } });
    }
    case 'ai-openai':
    case 'ai-openai-chat': {
      const provider = createOpenAI({ apiKey: step.key, baseURL: step.base, fetch });
      const model = step.client === 'ai-openai' ? provider(step.model) : provider.chat(step.model);
      return generateText({ model, prompt, maxOutputTokens: step.max_tokens, abortSignal: signal });
    }
    case 'ai-openai-compatible': {
      const provider = createOpenAICompatible({ name: 'gateway', apiKey: step.key, baseURL: step.base, fetch });
      return generateText({ model: provider(step.model), prompt, maxOutputTokens: step.max_tokens, abortSignal: signal });
    }
    case 'langchain': {
      const model = new ChatOpenAI({ model: step.model, apiKey: step.key, maxTokens: step.max_tokens, configuration: { baseURL: step.base, fetch } });
      return model.invoke(prompt, { signal });
    }
  }
  throw new Error(`unknown client ${step.client}`);
}

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === '') continue;
  const step = JSON.parse(line);
  const attempts = [];
  const deadline = AbortSignal.timeout(step.deadline_ms);
  const fetchRecorded = async (url, init = {}) => {
    const signal = init.signal ? AbortSignal.any([init.signal, deadline]) : deadline;
    const sent = now();
    const res = await fetch(url, { ...init, signal });
    const a = {
      sent,
      path: new URL(url).pathname,
      status: res.status,
      retry_after: res.headers.get('retry-after'),
      should_retry: res.headers.get('x-should-retry'),
    };
    if (res.status >= 400) a.body = await res.clone().text();
    a.answered = now();
    attempts.push(a);
    return res;
  };
  const out = { client: step.client, version: version(packages[step.client] ?? 'openai'), attempts };
  const start = now();
  try {
    await call(step, fetchRecorded, deadline);
    out.ok = true;
  } catch (err) {
    out.ok = false;
    out.error = describeError(err);
  }
  const end = now();
  out.elapsed_ms = end - start;
  // From the last answer to the end of the call: how long the client took
  // to give up once it had the gateway's word.
  if (attempts.length > 0) out.after_answer_ms = end - attempts[attempts.length - 1].answered;
  out.aborted = deadline.aborted;
  process.stdout.write(JSON.stringify(out).replaceAll(step.key, '<key>') + '\n');
}
