// `deno task infer --model <tiny Llama-family dir> --prompt-ids …` (serve/infer_ids.ts): the
// real CLI in a subprocess gives each model's golden greedy tokens for a prompt run alone
// (tests/fixtures/llama-family/README.md §6: alone or in the batch, the same tokens).

import assert from "node:assert/strict";
import { loadGoldens } from "./reference/chatglm.ts";

const CLI = new URL("../serve/infer_cli.ts", import.meta.url).pathname;

for (const name of ["qwen2-tiny", "qwen3-tiny", "llama3-tiny"]) {
  Deno.test(`infer --prompt-ids on ${name} prints the golden greedy tokens`, async () => {
    const dir = new URL(`./fixtures/llama-family/${name}`, import.meta.url).pathname;
    const goldens = loadGoldens(dir);
    const prompts = (goldens.cases.get("forward_batch")!.values as { prompts_ids: number[][] })
      .prompts_ids;
    const tokens = (goldens.cases.get("generate")!.values as { tokens: number[][] }).tokens;
    const args = ["run", "--allow-all", CLI, "--model", dir, "--dtype", "f32"];
    args.push("--prompt-ids", prompts[1].join(","), "--max-new-tokens", "12");
    const r = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
      .output();
    const err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, err);
    assert.equal(new TextDecoder().decode(r.stdout).trim(), tokens[1].join(" "));
  });
}

Deno.test("infer --prompt-ids refuses text ids and --prompt together", async () => {
  const { parseInferFlags } = await import("../serve/infer_flags.ts");
  assert.throws(() => parseInferFlags(["--prompt-ids", "1,x"]), /--prompt-ids: expected/);
  assert.throws(() => parseInferFlags(["--prompt-ids", "1", "--prompt", "hi"]), /--prompt-ids/);
  assert.deepEqual(parseInferFlags(["--prompt-ids", "5, 6,7"]).promptIds, [5, 6, 7]);
});
