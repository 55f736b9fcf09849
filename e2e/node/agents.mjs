// An agent written against the official Node.js SDKs, unchanged: each client
// is configured only by the environment an agent launcher sets
// (OPENAI_BASE_URL and OPENAI_API_KEY, ANTHROPIC_BASE_URL and
// ANTHROPIC_API_KEY), with the SDKs' default retries. e2e/agents_node_test.go
// runs one scenario per process and reads the one JSON line it prints.
//
//   node agents.mjs openai-chat | openai-stream | openai-error
//   node agents.mjs anthropic-message | anthropic-stream | anthropic-error
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const scenarios = {
  async 'openai-chat'() {
    const openai = new OpenAI();
    const completion = await openai.chat.completions.create({
      model: 'gpt-5-mini',
      messages: [{ role: 'user', content: 'hi' }],
    });
    return { text: completion.choices[0].message.content };
  },
  async 'openai-stream'() {
    const openai = new OpenAI();
    const stream = await openai.chat.completions.create({
      model: 'gpt-5-mini',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    });
    let text = '';
    let chunks = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      chunks++;
    }
    return { text, chunks };
  },
  async 'anthropic-message'() {
    const anthropic = new Anthropic();
    const message = await anthropic.messages.create({
      model: 'claude-haiku-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'hi' }],
    });
    return { text: message.content[0].text };
  },
  async 'anthropic-stream'() {
    const anthropic = new Anthropic();
    const stream = anthropic.messages.stream({
      model: 'claude-haiku-4-5',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'hi' }],
    });
    let chunks = 0;
    stream.on('text', () => chunks++);
    const message = await stream.finalMessage();
    return { text: message.content[0].text, chunks };
  },
  // A call that fails: the SDK's error, after whatever retries it chose.
  async 'openai-error'() {
    return errorOf(() => new OpenAI().models.list());
  },
  async 'anthropic-error'() {
    return errorOf(() =>
      new Anthropic().messages.create({
        model: 'claude-haiku-4-5',
        max_tokens: 64,
        messages: [{ role: 'user', content: 'hi' }],
      }),
    );
  },
};

async function errorOf(call) {
  try {
    await call();
  } catch (err) {
    return { error: err.constructor.name, status: err.status ?? null, type: err.error?.error?.type ?? err.error?.type ?? null };
  }
  throw new Error('the call succeeded');
}

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
console.log(JSON.stringify(await scenarios[name]()));
