// `deno task infer` (serve/infer_cli.ts): flags, history fitting, one-shot with --prompt and with
// piped stdin (stdout is only the answer), errors, and the interactive chat driven in a real
// terminal (tmux): answers, keeps history, /history, /reset, /exit.

import assert from "node:assert/strict";
import { createEngine } from "../serve/engine/mod.ts";
import { chatRequest, DISCLAIMER, runChat, SAME_CTRL_C_MS } from "../serve/infer_cli.ts";
import { createTerminalLines } from "../serve/terminal_lines.ts";
import { parseInferFlags } from "../serve/infer_flags.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const CLI = new URL("../serve/infer_cli.ts", import.meta.url).pathname;
const QUESTION = "头痛怎么办";

async function runCli(args: string[], stdin?: string) {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CLI, ...args],
    cwd: ROOT,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  });
  const child = cmd.spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The greedy answer of the tiny model, computed in-process. */
async function greedyAnswer(messages: { role: "user" | "assistant"; content: string }[]) {
  const engine = await createEngine({ model: DIR, dtype: "f32", log: () => {} });
  try {
    let text = "";
    for await (const d of engine.generate({ messages, maxNewTokens: 12, temperature: 0 })) {
      text += d.text;
    }
    return text;
  } finally {
    await engine.close();
  }
}

Deno.test("infer flags: defaults, values and clear errors", () => {
  const f = parseInferFlags([]);
  // Left out: the engine's generation defaults apply (the same for every front end).
  assert.equal(f.temperature, undefined);
  assert.equal(f.topP, undefined);
  assert.equal(f.maxNewTokens, undefined);
  assert.equal(f.model, undefined);
  const g = parseInferFlags([
    "--model",
    "m",
    "--adapter",
    "a",
    "--merged",
    "--prompt",
    "hi",
    "--temperature",
    "0",
    "--top-k",
    "5",
    "--seed",
    "3",
    "--history-turns",
    "2",
    "--dtype",
    "f32",
  ]);
  assert.deepEqual(
    [
      g.model,
      g.adapter,
      g.merged,
      g.prompt,
      g.temperature,
      g.topK,
      g.seed,
      g.historyTurns,
      g.dtype,
    ],
    ["m", "a", true, "hi", 0, 5, 3, 2, "f32"],
  );
  assert.throws(() => parseInferFlags(["--temperature=-1"]), /--temperature: expected/);
  assert.throws(() => parseInferFlags(["--top-p", "1.5"]), /--top-p/);
  assert.throws(() => parseInferFlags(["--max-new-tokens", "0"]), /--max-new-tokens/);
  assert.throws(() => parseInferFlags(["--merged"]), /--merged needs --adapter/);
  assert.throws(() => parseInferFlags(["--backend", "cuda"]), /--backend/);
  assert.throws(() => parseInferFlags(["--dtype", "bf16"]), /--dtype/);
  assert.throws(
    () => parseInferFlags(["--prompt-template", "alpaca"]),
    /--prompt-template: expected chat or instruction/,
  );
  assert.equal(parseInferFlags(["--prompt-template", "instruction"]).promptTemplate, "instruction");
  assert.throws(() => parseInferFlags(["--bogus"]), /Unknown option[^]*Usage/);
});

Deno.test("infer: the oldest turns are left out when the history outgrows the context", () => {
  // The scripted engine counts characters + 4 per message (+2).
  const engine = createScriptedEngine({ maxContext: 100 });
  const flags = parseInferFlags(["--max-new-tokens", "20"]);
  const history: [string, string][] = Array.from(
    { length: 5 },
    (_, i) => [`问题${i}`.repeat(3), "答".repeat(10)],
  );
  const { request, dropped } = chatRequest(engine, flags, "新问题", history);
  assert.ok(dropped > 0 && dropped < 5, `dropped ${dropped}`);
  assert.ok(engine.countPromptTokens(request.messages) <= 100 - 20);
  // The newest turns are the ones kept, in order, then the question.
  const kept = history.slice(dropped);
  assert.deepEqual(
    request.messages.map((m) => m.content),
    [...kept.flatMap(([q, a]) => [q, a]), "新问题"],
  );
  const limited = chatRequest(engine, parseInferFlags(["--history-turns", "1"]), "q", history);
  assert.equal(limited.request.messages.length, 3);
  assert.equal(limited.dropped, 4);
});

Deno.test("infer one-shot: --prompt and piped stdin print only the answer", async () => {
  const want = await greedyAnswer([{ role: "user", content: QUESTION }]);
  const flags = ["--model", DIR, "--dtype", "f32", "--temperature", "0", "--max-new-tokens", "12"];
  const a = await runCli([...flags, "--prompt", QUESTION]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, want + "\n");
  assert.ok(a.stderr.includes(DISCLAIMER), "the disclaimer goes to stderr");
  const b = await runCli(flags, QUESTION + "\n");
  assert.equal(b.code, 0, b.stderr);
  assert.equal(b.stdout, want + "\n");
});

Deno.test("infer: readable errors for a missing model, a missing demo, bad flags", async () => {
  const missing = await runCli(["--model", `${DIR}/nope`, "--prompt", "x"]);
  assert.equal(missing.code, 1);
  assert.equal(missing.stdout, "");
  assert.match(missing.stderr, /no such directory\.\nfix: /);
  const bad = await runCli(["--top-k", "x"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--top-k: expected an integer/);
  const demoExists = await Deno.stat(`${ROOT}/models/demo/config.json`).then(
    () => true,
    () => false,
  );
  if (!demoExists) {
    const demo = await runCli(["--prompt", "x"]);
    assert.equal(demo.code, 1);
    assert.match(demo.stderr, /demo model is missing[^]*deno task demo/);
  } else {
    const demo = await runCli(["--prompt", "x", "--max-new-tokens", "4"]);
    assert.equal(demo.code, 0, demo.stderr);
    assert.match(demo.stderr, /demo model/);
  }
});

Deno.test("infer without XDG_RUNTIME_DIR: no libwayland error on stderr", async () => {
  // The Vulkan loader's window-system probe (libwayland-client) printed `error: XDG_RUNTIME_DIR
  // is invalid or not set in the environment.` twice per run; the GPU setup now sets a private one.
  const cmd = new Deno.Command("env", {
    args: ["-u", "XDG_RUNTIME_DIR", Deno.execPath(), "run", "--allow-all", CLI, "--model", DIR]
      .concat(["--dtype", "f32", "--temperature", "0", "--max-new-tokens", "2", "--prompt", "x"]),
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  });
  const out = await cmd.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.doesNotMatch(stderr, /XDG_RUNTIME_DIR/);
  const { ensureRuntimeDir } = await import("../core/gpu/runtime_dir.ts");
  const saved = Deno.env.get("XDG_RUNTIME_DIR");
  try {
    Deno.env.set("XDG_RUNTIME_DIR", "relative/dir"); // libwayland refuses a relative path too
    const dir = ensureRuntimeDir()!;
    assert.ok(dir.startsWith("/"), dir);
    assert.equal(Deno.env.get("XDG_RUNTIME_DIR"), dir);
    const st = await Deno.lstat(dir);
    assert.ok(st.isDirectory && (st.mode! & 0o777) === 0o700, `mode ${st.mode?.toString(8)}`);
    assert.equal(ensureRuntimeDir(), dir, "a valid value is kept");
  } finally {
    if (saved === undefined) Deno.env.delete("XDG_RUNTIME_DIR");
    else Deno.env.set("XDG_RUNTIME_DIR", saved);
  }
});

async function tmuxAvailable(): Promise<boolean> {
  try {
    const r = await new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
      .output();
    return r.success;
  } catch {
    return false;
  }
}

async function tmux(...args: string[]): Promise<string> {
  const r = await new Deno.Command("tmux", { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) throw new Error(`tmux ${args[0]}: ${new TextDecoder().decode(r.stderr)}`);
  return new TextDecoder().decode(r.stdout);
}

Deno.test("infer interactive (tmux): answers, keeps history, /history, /reset, /exit", async (t) => {
  if (!(await tmuxAvailable())) {
    console.log("skipped: tmux is not installed (apt-get install -y tmux)");
    return;
  }
  const first = await greedyAnswer([{ role: "user", content: QUESTION }]);
  const second = await greedyAnswer([
    { role: "user", content: QUESTION },
    { role: "assistant", content: first },
    { role: "user", content: "要吃药吗？" },
  ]);
  const session = `medglm-infer-${Deno.pid}-${Date.now()}`;
  const done = await Deno.makeTempFile({ prefix: "medglm-infer-exit-" });
  const cmd = `cd '${ROOT}' && NO_COLOR=1 '${Deno.execPath()}' run --allow-all '${CLI}' ` +
    `--model '${DIR}' --dtype f32 --temperature 0 --max-new-tokens 12 2>/dev/null; ` +
    `echo "exit=$?" > '${done}'; sleep 60`;
  await tmux("new-session", "-d", "-s", session, "-x", "220", "-y", "80", cmd);
  const screen = () => tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session);
  const waitScreen = async (check: (s: string) => boolean, what: string) => {
    const t0 = Date.now();
    while (true) {
      const s = await screen();
      if (check(s)) return s;
      if (Date.now() - t0 > 60_000) throw new Error(`timed out waiting for ${what}:\n${s}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  // Prompts at the start of a line (history lines are indented with their number).
  const prompts = (s: string) => s.match(/^用户：/gm)?.length ?? 0;
  const send = (text: string) =>
    tmux("send-keys", "-t", session, "-l", text).then(() =>
      tmux("send-keys", "-t", session, "Enter")
    );
  try {
    let s = await waitScreen((s) => prompts(s) >= 1, "the first prompt");
    assert.ok(s.includes(DISCLAIMER), "the disclaimer is shown at start");
    await t.step("answers", async () => {
      await send(QUESTION);
      s = await waitScreen((s) => prompts(s) >= 2, "the first answer");
      assert.ok(s.includes(`ChatGLM：${first}`), s);
    });
    await t.step("keeps history", async () => {
      await send("要吃药吗？");
      s = await waitScreen((s) => prompts(s) >= 3, "the second answer");
      assert.ok(s.includes(`ChatGLM：${second}`), s);
      await send("/history");
      s = await waitScreen((s) => prompts(s) >= 4, "the history");
      assert.ok(s.includes(`[1] 用户：${QUESTION}`) && s.includes("[2] 用户：要吃药吗？"), s);
    });
    await t.step("resets", async () => {
      await send("/reset");
      s = await waitScreen((s) => prompts(s) >= 5, "the reset");
      assert.ok(s.includes("(history cleared)"));
      await send("/history");
      s = await waitScreen((s) => prompts(s) >= 6, "the empty history");
      assert.ok(s.includes("(no history yet)"));
      // After the reset the same question gets the first answer again (no old turns in the prompt).
      await send("要吃药吗？");
      s = await waitScreen((s) => prompts(s) >= 7, "the answer after reset");
      const alone = await greedyAnswer([{ role: "user", content: "要吃药吗？" }]);
      assert.ok(s.trimEnd().split("ChatGLM：").pop()!.startsWith(alone), s);
    });
    await t.step("exits", async () => {
      await send("/exit");
      const t0 = Date.now();
      while ((await Deno.readTextFile(done)).trim() === "") {
        if (Date.now() - t0 > 30_000) throw new Error("the chat did not exit");
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal((await Deno.readTextFile(done)).trim(), "exit=0");
    });
  } finally {
    await tmux("kill-session", "-t", session).catch(() => {});
    await Deno.remove(done).catch(() => {});
  }
});

Deno.test("infer interactive (tmux): Ctrl-C at the prompt and Ctrl-D quit cleanly", async () => {
  if (!(await tmuxAvailable())) {
    console.log("skipped: tmux is not installed (apt-get install -y tmux)");
    return;
  }
  for (const key of ["C-c", "C-d"]) {
    const session = `medglm-infer-${Deno.pid}-${Date.now()}`;
    const done = await Deno.makeTempFile({ prefix: "medglm-infer-exit-" });
    const cmd = `cd '${ROOT}' && NO_COLOR=1 '${Deno.execPath()}' run --allow-all '${CLI}' ` +
      `--model '${DIR}' --dtype f32 2>/dev/null; echo "exit=$?" > '${done}'; sleep 60`;
    try {
      await tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", cmd);
      const t0 = Date.now();
      while (!(await tmux("capture-pane", "-p", "-t", session)).includes("用户：")) {
        if (Date.now() - t0 > 60_000) throw new Error("no prompt");
        await new Promise((r) => setTimeout(r, 100));
      }
      await tmux("send-keys", "-t", session, key);
      while ((await Deno.readTextFile(done)).trim() === "") {
        if (Date.now() - t0 > 60_000) throw new Error(`${key} did not quit the chat`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal((await Deno.readTextFile(done)).trim(), "exit=0", key);
    } finally {
      await tmux("kill-session", "-t", session).catch(() => {});
      await Deno.remove(done).catch(() => {});
    }
  }
});

Deno.test("infer chat: Ctrl-C while answering stops the answer and keeps the chat", async () => {
  const engine = createScriptedEngine({
    answer: () => "一二三四五六七八九十".repeat(20),
    delayMs: 5,
  });
  let interrupt: (() => boolean) | null = null;
  let clock = 1000;
  let out = "";
  let stopped: boolean | null = null;
  let again: boolean | null = null;
  const lines = ["头痛", "/history", "/exit"][Symbol.iterator]();
  const code = await runChat(engine, parseInferFlags([]), {
    lines: {
      next: () => Promise.resolve(lines.next()),
    } as AsyncIterator<string>,
    out(text) {
      out += text;
      // Press Ctrl-C once the answer has started streaming.
      if (stopped === null && /ChatGLM：一二/.test(out)) stopped = interrupt!();
      // Under `deno task` the same press arrives again just after the answer has stopped.
      if (again === null && /\(stopped\)/.test(out)) {
        clock += 1;
        again = interrupt!();
      }
    },
    err: () => {},
    interactive: true,
    readAll: () => Promise.resolve(""),
  }, { onInterrupt: (h) => interrupt = h, now: () => clock });
  assert.equal(code, 0);
  assert.equal(stopped, true, "Ctrl-C during an answer stops it instead of quitting");
  assert.equal(again, true, "the same Ctrl-C delivered twice does not quit the chat");
  assert.match(out, /\(stopped\)/);
  // The partial answer is kept in the history, marked as stopped.
  assert.match(out, /\[1\] 用户：头痛\n {4}ChatGLM：一二[一-十]* \(stopped\)\n/);
  clock += SAME_CTRL_C_MS;
  assert.equal(interrupt!(), false, "a later Ctrl-C at the prompt quits");
});

Deno.test("infer chat: an answer stopped before its first word is kept in /history", async () => {
  const engine = createScriptedEngine({ answer: () => "很长的回答", delayMs: 200 });
  let interrupt: (() => boolean) | null = null;
  let out = "";
  const lines = ["头痛", "/history", "发烧", "/history", "/exit"][Symbol.iterator]();
  await runChat(engine, parseInferFlags([]), {
    lines: { next: () => Promise.resolve(lines.next()) } as AsyncIterator<string>,
    out(text) {
      out += text;
      if (text.endsWith("ChatGLM：") && !out.includes("(stopped)")) interrupt!();
    },
    err: () => {},
    interactive: true,
    readAll: () => Promise.resolve(""),
  }, { onInterrupt: (h) => interrupt = h });
  assert.match(out, /\[1\] 用户：头痛\n {4}ChatGLM： \(stopped\)\n/);
  // The next question is answered with the stopped turn in its history.
  assert.match(out, /\[2\] 用户：发烧\n {4}ChatGLM：很长的回答\n/);
  assert.deepEqual(
    engine.requests[1].messages.map((m) => m.content),
    ["头痛", "", "发烧"],
  );
});

Deno.test("terminal lines: text typed during an answer is shown after the next prompt", async () => {
  let screen = "";
  const t = createTerminalLines((s) => screen += s);
  const enc = new TextEncoder();
  // The prompt is up: keys echo, Backspace erases a wide character's two columns.
  const first = t.lines.next();
  t.feed(enc.encode("头疼x\x7f\x7f痛\r"));
  assert.deepEqual(await first, { value: "头痛", done: false });
  assert.equal(screen, "头疼x\b \b\b\b  \b\b痛\n");
  // An answer streams (no prompt up): keys are kept, not echoed into the answer.
  screen = "";
  t.feed(enc.encode("要吃药吗？\r还有"));
  t.feed(enc.encode("\x1b[A发烧")); // an arrow key is ignored
  assert.equal(screen, "");
  // The next prompts show the finished line, then the unfinished one, where typing goes on.
  assert.deepEqual(await t.lines.next(), { value: "要吃药吗？", done: false });
  const third = t.lines.next();
  assert.equal(screen, "要吃药吗？\n还有发烧");
  t.feed(enc.encode("吗\r"));
  assert.deepEqual(await third, { value: "还有发烧吗", done: false });
  // Ctrl-D on an empty line ends the input.
  const end = t.lines.next();
  t.feed(new Uint8Array([4]));
  assert.deepEqual(await end, { value: undefined, done: true });
  // A UTF-8 character split across reads is put together.
  const u = createTerminalLines(() => {});
  const line = u.lines.next();
  const bytes = enc.encode("痛\r");
  u.feed(bytes.subarray(0, 1));
  u.feed(bytes.subarray(1));
  assert.deepEqual(await line, { value: "痛", done: false });
});

Deno.test("infer under deno task (tmux): Ctrl-C stops answers, keeps the chat, shows typed text", async () => {
  if (!(await tmuxAvailable())) {
    console.log("skipped: tmux is not installed (apt-get install -y tmux)");
    return;
  }
  // `deno task` passes the terminal's SIGINT on to the chat, which also gets it from the terminal:
  // one Ctrl-C arrives twice, and the second used to quit the chat (3 tries in 10).
  const session = `medglm-task-${Deno.pid}-${Date.now()}`;
  const done = await Deno.makeTempFile({ prefix: "medglm-infer-exit-" });
  const cmd = `cd '${ROOT}' && NO_COLOR=1 '${Deno.execPath()}' task infer --model '${DIR}' ` +
    `--dtype f32 --temperature 0 --max-new-tokens 200 2>/dev/null; echo "exit=$?" > '${done}'; ` +
    "sleep 60";
  await tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "100", cmd);
  const screen = () => tmux("capture-pane", "-p", "-J", "-S", "-300", "-t", session);
  const waitScreen = async (check: (s: string) => boolean, what: string) => {
    const t0 = Date.now();
    while (true) {
      const s = await screen();
      if (check(s)) return s;
      if (Date.now() - t0 > 60_000) throw new Error(`timed out waiting for ${what}:\n${s}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const count = (s: string, re: RegExp) => s.match(re)?.length ?? 0;
  const prompts = (s: string) => count(s, /^用户：/gm);
  const stops = (s: string) => count(s, /^\(stopped\)$/gm);
  // Greedy, after /reset, the tiny model's answer to 头痛 runs to --max-new-tokens: every answer
  // is still streaming when Ctrl-C comes.
  const typed = ["/reset", "/reset", "/history"];
  try {
    await waitScreen((s) => prompts(s) >= 1, "the first prompt");
    for (let i = 1; i <= 3; i++) {
      await tmux("send-keys", "-t", session, "-l", "头痛");
      await tmux("send-keys", "-t", session, "Enter");
      await waitScreen((s) => {
        const after = s.slice(s.lastIndexOf("用户：头痛") + 5);
        const i0 = after.indexOf("ChatGLM：");
        return i0 >= 0 && after.slice(i0 + 8).replace(/\s/g, "").length >= 3;
      }, `answer ${i} to start`);
      // Typed while the answer streams, then Ctrl-C.
      await tmux("send-keys", "-t", session, "-l", typed[i - 1]);
      await tmux("send-keys", "-t", session, "C-c");
      // The chat goes on, and shows what was typed after its prompt (the keys may reach the
      // chat just after the signal: wait for them).
      const s = await waitScreen(
        (s) => stops(s) >= i && s.trimEnd().split("\n").at(-1) === `用户：${typed[i - 1]}`,
        `answer ${i} to stop and the next prompt with ${typed[i - 1]}`,
      );
      assert.equal(await Deno.readTextFile(done), "", `Ctrl-C ${i} quit the chat:\n${s}`);
      await tmux("send-keys", "-t", session, "Enter");
    }
    // The typed /history ran: the stopped answer is in it.
    const s = await waitScreen((s) => /\[1\] 用户：头痛\n/.test(s), "the history");
    assert.match(s, /\[1\] 用户：头痛\n {4}ChatGLM：[^]*? \(stopped\)\n/);
    assert.equal(count(s, /\(history cleared\)/g), 2);
    await tmux("send-keys", "-t", session, "-l", "/exit");
    await tmux("send-keys", "-t", session, "Enter");
    const t0 = Date.now();
    while ((await Deno.readTextFile(done)).trim() === "") {
      if (Date.now() - t0 > 30_000) throw new Error("the chat did not exit");
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal((await Deno.readTextFile(done)).trim(), "exit=0");
  } finally {
    await tmux("kill-session", "-t", session).catch(() => {});
    await Deno.remove(done).catch(() => {});
  }
});

Deno.test("infer interactive (tmux) on the demo model: it answers as trained, /history, /reset", async () => {
  if (!(await tmuxAvailable())) {
    console.log("skipped: tmux is not installed (apt-get install -y tmux)");
    return;
  }
  const samples = JSON.parse(
    await Deno.readTextFile(new URL("../data/samples/medical_qa.json", import.meta.url)),
  ) as { instruction: string; output: string }[];
  const [a, b] = [samples[0], samples[5]];
  const session = `medglm-demo-${Deno.pid}-${Date.now()}`;
  const cmd = `cd '${ROOT}' && NO_COLOR=1 '${Deno.execPath()}' run --allow-all '${CLI}' ` +
    `--temperature 0 --max-new-tokens 80 2>/dev/null; sleep 60`;
  await tmux("new-session", "-d", "-s", session, "-x", "220", "-y", "80", cmd);
  const screen = () => tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session);
  const prompts = (s: string) => s.match(/^用户：/gm)?.length ?? 0;
  const waitPrompts = async (n: number, what: string) => {
    const t0 = Date.now();
    while (true) {
      const s = await screen();
      if (prompts(s) >= n) return s;
      if (Date.now() - t0 > 60_000) throw new Error(`timed out waiting for ${what}:\n${s}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const send = (text: string) =>
    tmux("send-keys", "-t", session, "-l", text).then(() =>
      tmux("send-keys", "-t", session, "Enter")
    );
  try {
    let s = await waitPrompts(1, "the first prompt");
    assert.match(s, /demo/, "it says the model is a demo");
    await send(a.instruction);
    s = await waitPrompts(2, "the first answer");
    assert.ok(s.includes(`ChatGLM：${a.output}`), s);
    await send(b.instruction);
    s = await waitPrompts(3, "the second answer");
    await send("/history");
    s = await waitPrompts(4, "the history");
    assert.ok(
      s.includes(`[1] 用户：${a.instruction}`) && s.includes(`[2] 用户：${b.instruction}`),
      s,
    );
    await send("/reset");
    s = await waitPrompts(5, "the reset");
    await send(b.instruction);
    s = await waitPrompts(6, "the answer after reset");
    assert.ok(s.trimEnd().split("ChatGLM：").pop()!.startsWith(b.output), s);
  } finally {
    await tmux("kill-session", "-t", session).catch(() => {});
  }
});
