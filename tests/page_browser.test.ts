// The chat page in a real browser: Debian's chromium driven by playwright-core against the real
// server on 127.0.0.1 (scripted engine). Types questions, watches answers stream in, stops one,
// starts a new chat, changes settings, and saves desktop and phone screenshots under out/test/.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chromium, type Page } from "npm:playwright-core@1.65.1";
import { createApp } from "../serve/http/app.ts";
import { startServer } from "../serve/http/server.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const CHROMIUM = "/usr/bin/chromium";
const SHOTS = new URL("../out/test/", import.meta.url);
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const answerFor = (q: string) =>
  q.includes("长")
    ? "这是一个很长的回答。".repeat(60)
    : `关于“${q}”：建议注意休息，多喝温水，清淡饮食；如症状持续或加重，请及时就医。`;

const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) {
  console.log(`page_browser: skipped, ${CHROMIUM} is missing (apt-get install -y chromium)`);
}

Deno.test({
  name: "the chat page streams answers, keeps history, stops, starts over, on desktop and phone",
  ignore: !haveBrowser,
  async fn() {
    const engine = createScriptedEngine({
      answer: (m) => answerFor(m[m.length - 1].content),
      chunkChars: 2,
      delayMs: 30,
    });
    const server = startServer(createApp(engine, { maxConcurrent: 2, maxQueue: 2 }), {
      host: "127.0.0.1",
      port: 0,
      onListen: () => {},
    });
    const profile = await Deno.makeTempDir({ prefix: "medglm-chromium-" });
    await Deno.mkdir(SHOTS, { recursive: true });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      viewport: { width: 1280, height: 800 },
    });
    const problems: string[] = [];
    const watch = (page: Page) => {
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(`console: ${m.text()}`);
      });
      page.on("request", (r) => {
        if (!r.url().startsWith(server.url)) problems.push(`outside request: ${r.url()}`);
      });
    };
    try {
      const page = context.pages()[0] ?? await context.newPage();
      watch(page);
      await page.goto(server.url);
      assert.equal(await page.title(), "medglm 医疗问答");
      await page.waitForSelector("#status.ready");
      assert.match((await page.textContent("#status"))!, /scripted-test-engine/);
      assert.ok(await page.isVisible("#disclaimer"));
      assert.match((await page.textContent("#disclaimer"))!, /仅供参考/);

      // 1. A question: the answer shows up piece by piece, then completely.
      const q1 = "我最近经常失眠";
      await page.fill("#input", q1);
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.user");
      assert.equal(await page.textContent(".msg.user .text"), q1);
      assert.ok(await page.isVisible("#stop"), "stop button while generating");
      const partial = await page.waitForFunction(() => {
        const { document } = globalThis as unknown as PageGlobals;
        const el = document.querySelector(".msg.assistant.streaming .text");
        return el?.textContent ? el.textContent : null;
      });
      const partialText = (await partial.jsonValue()) as string;
      assert.ok(partialText.length < answerFor(q1).length, "seen before the answer was complete");
      assert.ok(answerFor(q1).startsWith(partialText));
      await page.waitForSelector(".msg.assistant:not(.streaming)");
      assert.equal(await page.textContent(".msg.assistant .text"), answerFor(q1));
      assert.match((await page.textContent(".msg.assistant .meta"))!, /tokens/);
      assert.ok(await page.isVisible("#send"));
      assert.ok(!(await page.isVisible("#stop")));
      await page.screenshot({ path: new URL("page_desktop.png", SHOTS).pathname });

      // 2. Multi-turn: the second question carries the first exchange.
      const q2 = "需要吃药吗？";
      await page.fill("#input", q2);
      await page.click("#send");
      await page.waitForFunction(() =>
        (globalThis as unknown as PageGlobals).document
          .querySelectorAll(".msg.assistant:not(.streaming)").length === 2
      );
      assert.deepEqual(engine.requests[1].messages, [
        { role: "user", content: q1 },
        { role: "assistant", content: answerFor(q1) },
        { role: "user", content: q2 },
      ]);

      // 3. Settings reach the server; a bad value shows the server's error naming the field.
      await page.click("#toggle-settings");
      await page.fill("#set-temperature", "0.3");
      await page.fill("#set-max_tokens", "8");
      await page.fill("#set-system", "你是一名谨慎的全科医生。");
      await page.screenshot({ path: new URL("page_settings.png", SHOTS).pathname });
      await page.fill("#input", "头晕");
      await page.press("#input", "Enter");
      await page.waitForFunction(() =>
        (globalThis as unknown as PageGlobals).document
          .querySelectorAll(".msg.assistant:not(.streaming)").length === 3
      );
      const r3 = engine.requests[2];
      assert.equal(r3.temperature, 0.3);
      assert.equal(r3.maxNewTokens, 8);
      assert.deepEqual(r3.messages[0], { role: "system", content: "你是一名谨慎的全科医生。" });
      assert.match((await page.textContent(".msg.assistant:nth-of-type(6) .meta"))!, /长度上限/);
      await page.fill("#set-temperature", "5");
      await page.fill("#input", "还有别的建议吗？");
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant.error");
      assert.match((await page.textContent(".msg.assistant.error .meta"))!, /temperature/);
      assert.equal(engine.requests.length, 3, "the invalid request never reached the engine");
      await page.fill("#set-temperature", "");
      await page.fill("#set-max_tokens", "");
      await page.fill("#set-system", "");
      await page.click("#toggle-settings");

      // 4. Stop: a long answer is cut off, the engine sequence is aborted.
      await page.click("#new-chat");
      assert.equal(await page.locator(".msg").count(), 0, "new chat clears the conversation");
      await page.fill("#input", "请给我一个长一点的回答");
      await page.press("#input", "Enter");
      await page.waitForFunction(() => {
        const { document } = globalThis as unknown as PageGlobals;
        const el = document.querySelector(".msg.assistant.streaming .text");
        return (el?.textContent ?? "").length >= 6;
      });
      await page.click("#stop");
      await page.waitForSelector(".msg.assistant:not(.streaming)");
      assert.match((await page.textContent(".msg.assistant .meta"))!, /已停止/);
      const stopped = engine.requests[3];
      assert.equal(stopped.messages.length, 1, "the new chat started without history");
      await waitFor(() => stopped.signal!.aborted && engine.stats().active === 0);
      const shown = (await page.textContent(".msg.assistant .text"))!;
      assert.ok(shown.length > 0 && shown.length < answerFor("长").length);

      // New chat in the middle of an answer: the old answer stops and stays out of the new chat.
      await page.fill("#input", "再来一个长一点的回答");
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant.streaming");
      await page.click("#new-chat");
      await waitFor(() => engine.requests[4]?.signal?.aborted === true);
      await page.fill("#input", "谢谢");
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant:not(.streaming)");
      assert.equal(await page.locator(".msg").count(), 2);
      await waitFor(() => engine.requests.length === 6);
      assert.deepEqual(engine.requests[5].messages, [{ role: "user", content: "谢谢" }]);

      // 5. A phone-sized screen: nothing overflows sideways, the composer stays in view.
      const phone = await context.newPage();
      watch(phone);
      await phone.setViewportSize({ width: 390, height: 844 });
      await phone.goto(server.url);
      await phone.waitForSelector("#status.ready");
      await phone.fill("#input", "孩子咳嗽有痰，晚上加重，需要去医院吗？");
      await phone.press("#input", "Enter");
      await phone.waitForSelector(".msg.assistant:not(.streaming)");
      const layout = await phone.evaluate(() => {
        const { document, innerWidth, innerHeight } = globalThis as unknown as PageGlobals;
        const box = document.querySelector("#composer")!.getBoundingClientRect();
        return {
          scrollWidth: document.documentElement.scrollWidth,
          width: innerWidth,
          composerBottom: box.bottom,
          height: innerHeight,
        };
      });
      assert.ok(
        layout.scrollWidth <= layout.width,
        `no sideways scroll: ${JSON.stringify(layout)}`,
      );
      assert.ok(layout.composerBottom <= layout.height + 1, "composer visible");
      assert.ok(await phone.isVisible("#disclaimer"));
      await phone.screenshot({ path: new URL("page_phone.png", SHOTS).pathname });

      // 6. A server with an API key: the page says to set it, and works once it is set.
      const keyed = startServer(createApp(engine, { apiKey: "page-key-1" }), {
        host: "127.0.0.1",
        port: 0,
        onListen: () => {},
      });
      try {
        const kp = await context.newPage();
        kp.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
        await kp.goto(keyed.url);
        await kp.waitForSelector("#status.ready");
        await kp.click("#toggle-settings");
        await kp.fill("#set-api_key", "");
        await kp.fill("#input", "你好");
        await kp.press("#input", "Enter");
        await kp.waitForSelector(".msg.assistant.error");
        assert.match((await kp.textContent(".msg.assistant.error .meta"))!, /API key/);
        assert.equal(await kp.inputValue("#input"), "你好", "the question is given back");
        await kp.fill("#set-api_key", "page-key-1");
        await kp.press("#input", "Enter");
        await kp.waitForSelector(".msg.assistant:not(.streaming):not(.error)");
        assert.equal(
          await kp.textContent(".msg.assistant:not(.error) .text"),
          answerFor("你好"),
        );
        await kp.close();
      } finally {
        await keyed.shutdown();
      }

      // 7. While the model loads the page says so, and turns ready when it has loaded.
      let loaded!: (e: typeof engine) => void;
      const loading = startServer(createApp(new Promise((r) => loaded = r)), {
        host: "127.0.0.1",
        port: 0,
        onListen: () => {},
      });
      try {
        const lp = await context.newPage();
        lp.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
        await lp.goto(loading.url);
        await lp.waitForSelector("#status.down");
        assert.match((await lp.textContent("#status"))!, /加载中/);
        loaded(engine);
        await lp.waitForSelector("#status.ready", { timeout: 10_000 });
        await lp.close();
      } finally {
        await loading.shutdown();
      }

      // The browser logs the deliberate 400 (temperature 5) as a failed load; nothing else.
      const expected = /Failed to load resource: .*status of 400/;
      assert.equal(problems.filter((p) => expected.test(p)).length, 1, problems.join("\n"));
      assert.deepEqual(
        problems.filter((p) => !expected.test(p)),
        [],
        "no script errors, CSP violations or outside requests",
      );
    } finally {
      await context.close();
      await server.shutdown();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "the page keeps the newest turns that fit, keeps the API key per tab, fits a phone",
  ignore: !haveBrowser,
  async fn() {
    // A small context (the scripted engine counts characters + 4 per message + 2): after a few
    // turns the whole conversation no longer fits; the page must leave out the oldest turns.
    const engine = createScriptedEngine({
      answer: (m) => answerFor(m[m.length - 1].content),
      chunkChars: 8,
      delayMs: 1,
      maxContext: 200,
    });
    const server = startServer(createApp(engine, { apiKey: "tab-key-1" }), {
      host: "127.0.0.1",
      port: 0,
      onListen: () => {},
    });
    const profile = await Deno.makeTempDir({ prefix: "medglm-chromium-" });
    await Deno.mkdir(SHOTS, { recursive: true });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      viewport: { width: 390, height: 844 },
    });
    const problems: string[] = [];
    try {
      const page = context.pages()[0] ?? await context.newPage();
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      await page.goto(server.url);
      await page.waitForSelector("#status.ready");

      // The phone layout shows the whole placeholder (it wraps to two lines at this width).
      const box = await page.evaluate(() => {
        const { document } = globalThis as unknown as PageGlobals;
        const el = document.querySelector("#input") as unknown as {
          scrollHeight: number;
          clientHeight: number;
        };
        return { scroll: el.scrollHeight, client: el.clientHeight };
      });
      assert.ok(box.scroll <= box.client + 1, `placeholder clipped: ${JSON.stringify(box)}`);
      await page.screenshot({ path: new URL("page_phone_empty.png", SHOTS).pathname });

      // The API key stays in this tab (sessionStorage) unless "remember" is ticked.
      await page.click("#toggle-settings");
      await page.fill("#set-api_key", "tab-key-1");
      await page.dispatchEvent("#set-api_key", "change");
      const stored = () =>
        page.evaluate(() => {
          const g = globalThis as unknown as PageGlobals;
          return {
            local: g.localStorage.getItem("medglm.api_key"),
            session: g.sessionStorage.getItem("medglm.api_key"),
            settings: g.localStorage.getItem("medglm.settings") ?? "",
          };
        });
      let st = await stored();
      assert.equal(st.local, null, "not in localStorage without remember");
      assert.equal(st.session, "tab-key-1");
      assert.doesNotMatch(st.settings, /tab-key-1/);
      await page.click("#toggle-settings");

      // Questions until the conversation outgrows the context.
      const qs = ["头痛怎么办？", "发烧了吗？", "需要吃药吗？", "要去医院吗？", "饮食注意什么？"];
      for (const [i, q] of qs.entries()) {
        await page.fill("#input", q);
        await page.press("#input", "Enter");
        await page.waitForFunction(
          (n) =>
            (globalThis as unknown as PageGlobals).document
              .querySelectorAll(".msg.assistant:not(.streaming)").length === n,
          i + 1,
        );
      }
      assert.equal(await page.locator(".msg.error").count(), 0, "no error bubble");
      const last = engine.requests.at(-1)!;
      const count = (m: { content: string }[]) =>
        m.reduce((n, x) => n + [...x.content].length + 4, 2);
      assert.ok(
        count(last.messages) <= 200 - 50,
        `the prompt leaves room: ${count(last.messages)}`,
      );
      assert.equal(last.messages.at(-1)!.content, qs.at(-1));
      assert.ok(last.messages.length < 2 * qs.length - 1, "old turns were left out");
      // The newest turns are the ones kept, in order.
      const full = qs.flatMap((q, i) => i < qs.length - 1 ? [q, answerFor(q)] : [q]);
      assert.deepEqual(
        last.messages.map((m) => m.content),
        full.slice(full.length - last.messages.length),
      );
      // Every answer had its full room (none cut short), and the page says what was left out.
      assert.equal(await page.textContent(".msg.assistant:last-of-type .text"), answerFor(qs[4]));
      assert.match(
        (await page.textContent(".msg.assistant:last-of-type .meta"))!,
        /较早的 \d+ 轮对话超出了模型的上下文长度/,
      );
      await page.screenshot({ path: new URL("page_phone_trimmed.png", SHOTS).pathname });

      // A question that alone is too long: a Chinese message, not an English-only error code.
      await page.fill("#input", "很".repeat(300));
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant.error");
      assert.match((await page.textContent(".msg.assistant.error .meta"))!, /问题太长/);

      // A new tab of the same browser has no key; ticking "remember" keeps it across tabs.
      const other = await context.newPage();
      other.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      await other.goto(server.url);
      await other.waitForSelector("#status.ready");
      assert.equal(await other.inputValue("#set-api_key"), "");
      await page.click("#toggle-settings");
      await page.check("#set-remember_key");
      st = await stored();
      assert.equal(st.local, "tab-key-1");
      assert.equal(st.session, null);
      const third = await context.newPage();
      await third.goto(server.url);
      await third.waitForSelector("#status.ready");
      assert.equal(await third.inputValue("#set-api_key"), "tab-key-1");
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
      await server.shutdown();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    }
  },
});

async function waitFor(check: () => boolean, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The few DOM members the in-page checks use (this file is type-checked without the DOM lib). */
interface PageGlobals {
  document: {
    querySelector(selector: string): {
      textContent: string | null;
      getBoundingClientRect(): { bottom: number };
    } | null;
    querySelectorAll(selector: string): { length: number };
    documentElement: { scrollWidth: number };
  };
  innerWidth: number;
  innerHeight: number;
  localStorage: { getItem(key: string): string | null };
  sessionStorage: { getItem(key: string): string | null };
}
