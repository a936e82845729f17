// Drives the gateway with the official openai package (see lib.mjs for the
// plan and the result). Ops: "chat" (non-streaming), "chat_stream".
import OpenAI from 'openai';
import { runSteps } from './lib.mjs';

await runSteps('openai', async (step, fetch, chunk) => {
  const client = new OpenAI({
    apiKey: step.key,
    baseURL: step.base,
    fetch,
    timeout: 15_000,
    ...(step.max_retries !== undefined ? { maxRetries: step.max_retries } : {}),
  });
  const messages = [{ role: 'user', content: 'say hello' }];
  switch (step.op) {
    case 'chat': {
      const c = await client.chat.completions.create({ model: step.model, messages });
      return c.choices[0].message.content;
    }
    case 'chat_stream': {
      const stream = await client.chat.completions.create({ model: step.model, messages, stream: true });
      let text = '';
      for await (const c of stream) {
        const delta = c.choices[0]?.delta?.content ?? '';
        if (delta !== '') await chunk(delta);
        text += delta;
      }
      return text;
    }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
});
