// The openai Node SDK through the gateway (run by scripts/sdk-tests.sh with SDK_EXTRA=1 after
// `npm install openai zod` in a temporary directory). Prints one line per feature; exit 1 on a failure.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";

const client = new OpenAI({ baseURL: `${process.env.LQO_URL}/v1`, apiKey: "sk-client-side-key-not-used" });
const upstream = process.env.LQO_UPSTREAM_URL;
const results = [];
const check = async (name, fn) => {
  try {
    await fn();
    results.push([name, "ok", ""]);
  } catch (e) {
    results.push([name, "FAIL", `${e?.constructor?.name}: ${e?.message}`.slice(0, 300)]);
  }
};
const assert = (cond, what) => {
  if (!cond) throw new Error(what);
};
const upstreamRequests = async () => (await (await fetch(`${upstream}/mock/stats`)).json()).requests;
const lastBody = async () => (await (await fetch(`${upstream}/mock/requests`)).json()).at(-1).body;
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
    strict: true,
  },
};

await check("tools", async () => {
  const r = await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: "Weather in Lima?" }], tools: [weather] });
  assert(r.choices[0].message.tool_calls[0].function.name === "get_weather", JSON.stringify(r));
});
await check("tools, streamed", async () => {
  const stream = await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: "Weather?" }], tools: [weather], stream: true });
  let args = "";
  for await (const chunk of stream) for (const t of chunk.choices[0]?.delta?.tool_calls ?? []) args += t.function?.arguments ?? "";
  assert(JSON.parse(args).city, args);
});
await check("tool turn", async () => {
  const first = await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: "Weather?" }], tools: [weather] });
  const msg = first.choices[0].message;
  const r = await client.chat.completions.create({
    model: "gpt-test",
    tools: [weather],
    messages: [{ role: "user", content: "Weather?" }, msg, { role: "tool", tool_call_id: msg.tool_calls[0].id, content: "18 C" }],
  });
  assert(r.choices[0].finish_reason === "stop", JSON.stringify(r));
});
await check("parse with zod", async () => {
  const City = z.object({ name: z.string(), population: z.number().int() });
  const r = await client.chat.completions.parse({ model: "gpt-test", messages: [{ role: "user", content: "A city" }], response_format: zodResponseFormat(City, "city") });
  assert(typeof r.choices[0].message.parsed.population === "number", JSON.stringify(r));
});
await check("n=2, logprobs", async () => {
  const r = await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: "hi" }], n: 2, logprobs: true, top_logprobs: 2 });
  assert(r.choices.length === 2 && r.choices[1].logprobs.content[0].top_logprobs.length === 2, JSON.stringify(r));
});
await check("image part", async () => {
  const png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
  await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: [{ type: "text", text: "What?" }, { type: "image_url", image_url: { url: png } }] }] });
  assert((await lastBody()).messages[0].content[1].type === "image_url", "image part lost");
});
await check("upstream 400 → BadRequestError", async () => {
  try {
    await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: "x [mock:status=400]" }] });
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError && e.code === "invalid_request", String(e));
    return;
  }
  throw new Error("no error");
});
await check("upstream 429 → RateLimitError, no SDK retries", async () => {
  const before = await upstreamRequests();
  try {
    await client.chat.completions.create({ model: "gpt-test", messages: [{ role: "user", content: "x [mock:status=429]" }] });
  } catch (e) {
    assert(e instanceof OpenAI.RateLimitError, String(e));
    const n = (await upstreamRequests()) - before;
    assert(n === 3, `upstream saw ${n} requests`);
    return;
  }
  throw new Error("no error");
});
await check("responses.create, plain and streamed", async () => {
  const r = await client.responses.create({ model: "gpt-resp", input: "Tell me about Lima" });
  assert(r.output_text.includes("Lima"), JSON.stringify(r));
  const kinds = [];
  for await (const ev of await client.responses.create({ model: "gpt-resp", input: "Stream", stream: true })) kinds.push(ev.type);
  assert(kinds.at(-1) === "response.completed", kinds.join(","));
});
await check("responses on a Chat Completions provider (translated)", async () => {
  const tool = { type: "function", name: "get_weather", parameters: weather.function.parameters, strict: true };
  const r = await client.responses.create({ model: "gpt-test", input: "Weather?", tools: [tool] });
  assert(r.output[0].type === "function_call", JSON.stringify(r));
  const stream = client.responses.stream({ model: "gpt-test", input: "Stream about Lima" });
  const final = await stream.finalResponse();
  assert(final.output_text.includes("Stream about Lima"), JSON.stringify(final));
});
await check("embeddings.create (base64 by default)", async () => {
  const r = await client.embeddings.create({ model: "gpt-test", input: ["a", "b"], dimensions: 8 });
  assert(r.data.length === 2 && r.data[0].embedding.length === 8, JSON.stringify(r));
});
await check("models.retrieve (alias)", async () => {
  const m = await client.models.retrieve("gpt-4o");
  assert(m.id === "gpt-4o" && m.owned_by === "chat", JSON.stringify(m));
});

const width = Math.max(...results.map(([n]) => n.length));
console.log("\nopenai Node SDK through the gateway:");
for (const [name, status, detail] of results) console.log(`  ${name.padEnd(width)}  ${status}  ${detail}`);
process.exit(results.every(([, s]) => s === "ok") ? 0 : 1);
