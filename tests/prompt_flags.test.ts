// `--prompt-format` (the data build's flag name and values) and `--enable-thinking` /
// `--no-thinking` in `deno task infer` and `deno task serve`, and the flags reaching the engine's
// prompt: serve's startEngine on a Qwen3 directory renders transformers' enable_thinking=false
// prompt with --no-thinking.
import assert from "node:assert/strict";
import { parseInferFlags } from "../serve/infer_flags.ts";
import { parseServeFlags } from "../serve/http/flags.ts";
import { startEngine } from "../serve/cli.ts";
import type { LocalEngine } from "../serve/engine/engine.ts";
import { writeQwen3Dir } from "./helpers/qwen3_model_dir.ts";
import { QWEN3_TOKENIZER_FIXTURES } from "./helpers/qwen3_tokenizer.ts";

const PARSERS = [["infer", parseInferFlags], ["serve", parseServeFlags]] as const;

Deno.test("prompt flags: --prompt-format takes the prompt builder's formats, in infer and serve", () => {
  for (const [name, parse] of PARSERS) {
    for (const f of ["chat", "instruction", "chat-template"]) {
      assert.equal(parse(["--prompt-format", f]).promptTemplate, f, name);
      // the older spelling is the same flag
      assert.equal(parse(["--prompt-template", f]).promptTemplate, f, name);
    }
    const none = parse([]);
    assert.equal(none.promptTemplate, undefined, name);
    assert.equal(none.enableThinking, undefined, name);
    assert.throws(
      () => parse(["--prompt-format", "alpaca"]),
      /--prompt-format: expected chat or instruction or chat-template \(got "alpaca"\)/,
      name,
    );
    assert.throws(
      () => parse(["--prompt-format", "chat", "--prompt-template", "instruction"]),
      /--prompt-format chat and --prompt-template instruction disagree/,
      name,
    );
    assert.equal(
      parse(["--prompt-format", "chat", "--prompt-template", "chat"]).promptTemplate,
      "chat",
    );
  }
});

Deno.test("prompt flags: --enable-thinking / --no-thinking, only with chat-template", () => {
  for (const [name, parse] of PARSERS) {
    assert.equal(parse(["--no-thinking"]).enableThinking, false, name);
    assert.equal(parse(["--enable-thinking"]).enableThinking, true, name);
    const both = parse(["--prompt-format", "chat-template", "--no-thinking"]);
    assert.deepEqual([both.promptTemplate, both.enableThinking], ["chat-template", false]);
    assert.throws(
      () => parse(["--enable-thinking", "--no-thinking"]),
      /--enable-thinking and --no-thinking: give one of them/,
      name,
    );
    assert.throws(
      () => parse(["--prompt-format", "instruction", "--no-thinking"]),
      /--no-thinking applies to the chat-template prompt format only \(got --prompt-format instruction\)/,
      name,
    );
  }
});

Deno.test("prompt flags: serve --no-thinking gives transformers' enable_thinking=false prompt", async () => {
  const cases = (await Deno.readTextFile(`${QWEN3_TOKENIZER_FIXTURES}chat_template.jsonl`))
    .split("\n").filter((l) => l).map((l) => JSON.parse(l))
    .filter((c) => c.add_generation_prompt);
  const noThink = cases.filter((c) => c.enable_thinking === false);
  const think = cases.filter((c) => c.enable_thinking !== false);
  assert.ok(noThink.length > 0 && think.length > 0);
  const dir = await writeQwen3Dir();
  const engines: LocalEngine[] = [];
  try {
    const log = () => {};
    // startEngine builds a local engine (typed as the plain Engine interface)
    const off = await startEngine(
      parseServeFlags(["--model", dir, "--no-thinking"]),
      log,
    ) as LocalEngine;
    engines.push(off);
    for (const c of noThink) assert.deepEqual(off.encodeMessages(c.messages), c.ids, c.id);
    const on = await startEngine(
      parseServeFlags(["--model", dir, "--prompt-format", "chat-template"]),
      log,
    ) as LocalEngine;
    engines.push(on);
    for (const c of think) assert.deepEqual(on.encodeMessages(c.messages), c.ids, c.id);
    // the switch changes the prompt: the thinking prompt is not the no-thinking one
    assert.notDeepEqual(on.encodeMessages(noThink[0].messages), noThink[0].ids);
  } finally {
    for (const e of engines) await e.close();
    await Deno.remove(dir, { recursive: true });
  }
});
