// `deno task demo --arch qwen3`, short: the learned tokenizer, the chat-template data build, a
// random Qwen3 model trained a few steps, answers; then the model directory it leaves loads in
// the engine and generates with its chat template, and the CLI refuses flags of the other demo.
import assert from "node:assert/strict";
import { gpuSkipReason } from "./helpers/gpu_skip.ts";
import { readLlamaConfig } from "../core/models/llama/config.ts";
import { demoMain } from "../demo/cli.ts";
import { runQwen3Demo } from "../demo/qwen3.ts";
import { loadByteLevelTokenizer } from "../data/tokenizer/bytelevel/mod.ts";
import { createEngine } from "../serve/engine/create.ts";

const gpuReason = await gpuSkipReason("demo_qwen3");

Deno.test({
  name: "demo --arch qwen3 (12 steps): tokenizer, data, training, answers; the model serves",
  ignore: gpuReason !== "",
  async fn() {
    const out = await Deno.makeTempDir({ prefix: "medglm-demo-qwen3-" });
    const lines: string[] = [];
    try {
      const r = await runQwen3Demo({
        out,
        maxSteps: 12,
        questions: 2,
        maxNewTokens: 6,
        log: (l) => lines.push(l),
        progressStream: { writeSync: (p) => p.length },
      });
      for (const step of ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]) {
        assert.ok(lines.some((l) => l.startsWith(step)), step);
      }
      // a fresh model starts near the uniform loss over its vocabulary, and training lowers it
      const config = await readLlamaConfig(r.modelDir);
      assert.equal(config.modelType, "qwen3");
      assert.ok(r.tokenizerSize <= config.vocabSize);
      assert.ok(Math.abs(r.loss.first - Math.log(config.vocabSize)) < 0.7, `${r.loss.first}`);
      assert.ok(r.loss.last < r.loss.first, `loss ${r.loss.first} → ${r.loss.last}`);
      assert.equal(r.answers.length, 2);

      // the learned tokenizer: Qwen3's chat template and chat tokens, exact round trips
      const tok = await loadByteLevelTokenizer(r.modelDir);
      assert.equal(tok.size, r.tokenizerSize);
      assert.ok(tok.chatTemplate?.includes("enable_thinking"));
      assert.equal(tok.idToPiece(tok.eosId!), "<|im_end|>");
      const text = "<|im_start|>user\n头痛发热怎么办？<|im_end|>\n";
      assert.equal(tok.decode(tok.encode(text)), text);
      assert.ok(tok.encode("头痛发热怎么办").length < 7 * 3, "merges beyond single bytes");

      // the directory serves: chat-template prompt (thinking off), answer, finish reason
      const engine = await createEngine({
        model: r.modelDir,
        enableThinking: false,
        log: () => {},
        progressBar: false,
      });
      try {
        assert.equal(engine.info.architecture, "qwen3");
        const prompt = tok.decode(engine.encodeMessages([{ role: "user", content: "头痛" }]));
        assert.equal(
          prompt,
          "<|im_start|>user\n头痛<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
        );
        let answer = "", finish;
        for await (
          const d of engine.generate({
            messages: [{ role: "user", content: "头痛" }],
            temperature: 0,
            maxNewTokens: 4,
          })
        ) {
          answer += d.text;
          finish = d.finishReason ?? finish;
        }
        assert.ok(finish === "stop" || finish === "length", `${finish}`);
        assert.equal(typeof answer, "string");
      } finally {
        await engine.close();
      }
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test("demo CLI: --arch is checked, and flags of the other demo are refused", async () => {
  const errors: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  try {
    assert.equal(await demoMain(["--arch", "llama9"]), 2);
    assert.match(errors.at(-1)!, /--arch: expected chatglm or qwen3 \(got "llama9"\)/);
    assert.equal(await demoMain(["--arch", "qwen3", "--install"]), 2);
    assert.match(errors.at(-1)!, /--install does not apply to --arch qwen3/);
    assert.equal(await demoMain(["--max-steps", "3"]), 2);
    assert.match(errors.at(-1)!, /--max-steps does not apply to --arch chatglm/);
  } finally {
    console.error = orig;
  }
});
