/** `deno task bot` flags: token only from the environment, clear errors, and a real run. */
import assert from "node:assert/strict";
import { createBot } from "../bot/bot.ts";
import { parseBotArgs, runBot } from "../bot/cli.ts";
import { startFakeTelegram } from "./helpers/fake_telegram.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const env = { TELEGRAM_BOT_TOKEN: "42:secret-token" };

Deno.test("flags: the token comes only from TELEGRAM_BOT_TOKEN", () => {
  assert.throws(
    () => parseBotArgs(["--token", "1:abc", "--endpoint", "http://x"], env),
    /only from the environment variable TELEGRAM_BOT_TOKEN/,
  );
  assert.throws(
    () => parseBotArgs(["--endpoint", "http://x"], {}),
    /TELEGRAM_BOT_TOKEN is not set/,
  );
  const cfg = parseBotArgs(["--endpoint", "http://127.0.0.1:8000"], env);
  assert.equal(cfg.options.token, "42:secret-token");
  assert.equal(cfg.engine.kind, "endpoint");
});

Deno.test("flags: bad values are named", () => {
  const bad: [string[], RegExp][] = [
    [[], /--endpoint URL or --model DIR/],
    [["--endpoint", "http://x", "--model", "m"], /either --endpoint or --model/],
    [["--endpoint", "http://x", "--allow", "12,abc"], /--allow: "abc" is not a user id/],
    [["--endpoint", "http://x", "--edit-interval", "fast"], /--edit-interval: expected an integer/],
    [["--endpoint", "http://x", "--length", "huge"], /--length/],
    [["--endpoint", "http://x", "--temperature", "3"], /--temperature/],
    [["--endpoint", "http://x", "--webhook-url", "http://plain.example"], /https/],
    [
      ["--endpoint", "http://x", "--webhook-url", "https://bot.example/hook"],
      /TELEGRAM_WEBHOOK_SECRET/,
    ],
    [["--endpoint", "http://x", "--webhook-port", "8443"], /need --webhook-url/],
    [["--endpoint", "http://x", "--bogus"], /bogus/],
  ];
  for (const [args, re] of bad) assert.throws(() => parseBotArgs(args, env), re, args.join(" "));
});

Deno.test("flags: allowlist and webhook secret from the environment", () => {
  const cfg = parseBotArgs(
    [
      "--endpoint",
      "http://x",
      "--webhook-url",
      "https://bot.example/hook",
      "--edit-interval",
      "500",
    ],
    { ...env, TELEGRAM_ALLOWED_USERS: "11, 22", TELEGRAM_WEBHOOK_SECRET: "abc_DEF-1" },
  );
  assert.deepEqual(cfg.options.allow, [11, 22]);
  assert.equal(cfg.options.webhook?.secret, "abc_DEF-1");
  assert.equal(cfg.options.webhook?.port, 8443);
  assert.equal(cfg.options.editIntervalMs, 500);
});

Deno.test("runBot: polls the Bot API and answers through --endpoint; the token never reaches logs", async () => {
  const fake = startFakeTelegram();
  const llm = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (new URL(req.url).pathname === "/v1/models") {
      return Response.json({ data: [{ id: "demo" }] });
    }
    const body = [
      `data: ${
        JSON.stringify({ choices: [{ delta: { content: "早睡早起。" }, finish_reason: null }] })
      }`,
      `data: ${JSON.stringify({ choices: [{ delta: {}, finish_reason: "stop" }] })}`,
      "data: [DONE]",
      "",
    ].join("\n\n");
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  const dir = await Deno.makeTempDir();
  const errors: string[] = [];
  const origError = console.error;
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  const stop = new AbortController();
  try {
    const cfg = parseBotArgs([
      "--endpoint",
      `http://127.0.0.1:${(llm.addr as Deno.NetAddr).port}`,
      "--api-root",
      fake.apiRoot,
      "--kv",
      `${dir}/sub/bot.kv`,
      "--edit-interval",
      "10",
    ], { TELEGRAM_BOT_TOKEN: fake.token });
    cfg.options.pollingTimeoutSeconds = 5;
    const run = runBot(cfg, stop.signal);
    fake.sendText({ chatId: 5, text: "怎么养生" });
    await fake.waitFor(() => fake.botTexts(5)[0] === "早睡早起。", 10_000, "answer");
    stop.abort();
    assert.equal(await run, 0);
    assert.ok((await Deno.stat(`${dir}/sub/bot.kv`)).isFile);
    assert.ok(fake.callsOf("setMyCommands").length === 1);
    assert.ok(errors.every((e) => !e.includes(fake.token)));
  } finally {
    console.error = origError;
    stop.abort();
    await fake.close();
    await llm.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a token Telegram rejects stops start() with a clear error that hides the token", async () => {
  const fake = startFakeTelegram();
  const logs: string[] = [];
  const bot = createBot(createScriptedEngine(), {
    token: "999:wrong-token",
    apiRoot: fake.apiRoot,
    log: (_l, m) => logs.push(m),
  });
  try {
    await assert.rejects(bot.start(), (e: Error) => {
      assert.match(e.message, /rejected the bot token \(401/);
      assert.ok(!e.message.includes("999:wrong-token"));
      return true;
    });
    assert.equal(fake.callsOf("getUpdates").length, 0);
  } finally {
    await bot.stop();
    await fake.close();
  }
});

Deno.test("bot: prompt flags reach the in-process engine and are refused with --endpoint", () => {
  const env = { TELEGRAM_BOT_TOKEN: "1:abc" };
  const local = parseBotArgs(
    ["--model", "models/demo", "--prompt-format", "chat-template", "--no-thinking"],
    env,
  );
  assert.equal(local.engine.kind, "local");
  if (local.engine.kind === "local") {
    assert.equal(local.engine.promptTemplate, "chat-template");
    assert.equal(local.engine.enableThinking, false);
  }
  assert.throws(
    () => parseBotArgs(["--endpoint", "http://x", "--no-thinking"], env),
    /apply to --model; a server given by --endpoint renders its own prompts/,
  );
  assert.throws(
    () => parseBotArgs(["--model", "m", "--enable-thinking", "--no-thinking"], env),
    /give one of them/,
  );
  assert.throws(
    () => parseBotArgs(["--model", "m", "--prompt-format", "xml"], env),
    /--prompt-format: expected chat or instruction or chat-template \(got "xml"\)/,
  );
});
