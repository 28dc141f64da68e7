// `deno task data --tokenizer QWEN_DIR --prompt-format chat-template`: the data build's token
// shards hold examples in the model's own chat template, only the answers supervised.
import assert from "node:assert/strict";
import { readManifest, readTokenShard } from "../data/build/mod.ts";
import { loadTokenizer } from "../data/tokenizer/mod.ts";
import { main as cli } from "../data/cli.ts";
import { qwen3TokenizerDir } from "./helpers/qwen3_tokenizer.ts";

const ROOT = new URL("./fixtures/datasets", import.meta.url).pathname;
const IM_END = 151645;

async function run(args: string[]): Promise<{ code: number; text: string }> {
  const lines: string[] = [];
  const log = console.log, err = console.error;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    return { code: await cli(args), text: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = err;
  }
}

Deno.test("data cli --prompt-format chat-template: template examples in the token shards", async () => {
  const qwen = await qwen3TokenizerDir();
  const tok = await loadTokenizer(qwen);
  const dir = await Deno.makeTempDir({ prefix: "medglm-template-build-" });
  try {
    await Deno.writeTextFile(
      `${dir}/c.json`,
      JSON.stringify({
        name: "tpl",
        root: ROOT,
        sources: [{ name: "m", paths: ["med-chatglm/data/*.txt"] }],
        split: { validRatio: 0 },
      }),
    );
    const base = ["-c", `${dir}/c.json`, "-o", `${dir}/out`, "-q", "--tokenizer", qwen];
    // The seed's template needs ChatGLM's tokenizer: refused before reading, with the fix.
    const refused = await run(base);
    assert.notEqual(refused.code, 0);
    assert.match(refused.text, /promptFormat "instruction" needs ChatGLM-6B's tokenizer/);
    assert.match(refused.text, /--prompt-format chat-template/);
    const bad = await run([...base, "--prompt-format", "alpaca"]);
    assert.equal(bad.code, 2);
    assert.match(bad.text, /--prompt-format: expected instruction or chat-template/);

    const built = await run([...base, "--prompt-format", "chat-template"]);
    assert.equal(built.code, 0, built.text);
    const manifest = await readManifest(`${dir}/out`);
    assert.equal(manifest.tokens?.promptFormat, "chat-template");
    const shard = await readTokenShard(`${dir}/out/train-00000.bin`);
    assert.ok(shard.count > 0);
    const records = (await Deno.readTextFile(`${dir}/out/train-00000.jsonl`)).trim().split("\n")
      .map((l) => JSON.parse(l));
    for (let i = 0; i < shard.count; i++) {
      const ex = shard.example(i);
      const r = records[ex.recordIndex];
      const ids = [...ex.inputIds];
      const text = tok.decode(ids);
      const question = r.input ? `${r.instruction}\n${r.input}` : r.instruction;
      assert.ok(text.startsWith(`<|im_start|>user\n${question}<|im_end|>\n`), text);
      assert.equal(ids.at(-1), IM_END);
      const prompt = tok.decode(ids.slice(0, ex.seqLen));
      assert.ok(prompt.endsWith("<|im_start|>assistant\n"), prompt);
      const labels = [...ex.labels];
      assert.ok(labels.slice(0, ex.seqLen).every((l) => l === -100));
      assert.deepEqual(labels.slice(ex.seqLen), ids.slice(ex.seqLen));
      assert.equal(
        tok.decode(ids.slice(ex.seqLen)),
        `<think>\n\n</think>\n\n${r.output}<|im_end|>`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
