// Drives the gateway with the official ollama package (see lib.mjs for the
// plan and the result). Ops: "chat", "chat_stream", "generate",
// "generate_stream".
import { Ollama } from 'ollama';
import { runSteps } from './lib.mjs';

await runSteps('ollama', async (step, fetch, chunk) => {
  const client = new Ollama({ host: step.base, fetch, headers: { Authorization: `Bearer ${step.key}` } });
  const messages = [{ role: 'user', content: 'say hello' }];
  switch (step.op) {
    case 'chat':
      return (await client.chat({ model: step.model, messages, stream: false })).message.content;
    case 'generate':
      return (await client.generate({ model: step.model, prompt: 'say hello', stream: false })).response;
    case 'chat_stream': {
      let text = '';
      for await (const part of await client.chat({ model: step.model, messages, stream: true })) {
        if (part.message.content !== '') await chunk(part.message.content);
        text += part.message.content;
      }
      return text;
    }
    case 'generate_stream': {
      let text = '';
      for await (const part of await client.generate({ model: step.model, prompt: 'say hello', stream: true })) {
        if (part.response !== '') await chunk(part.response);
        text += part.response;
      }
      return text;
    }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
});
