/**
 * Child of bench/engine.ts: batch-1 per-token decode with an earlier commit's code (extracted by
 * bench/git_tree.ts), written against what 965e0a1 exports: `loadModel` (core), `webgpuDecoder`
 * (serve/engine/decoder.ts: prefill and decode return logits) and `chooseToken`
 * (serve/engine/sampling.ts, the host sampler) with core's `createRng`. The loop is the old
 * scheduler's per-token step without its queueing: read the logits, choose on the host, feed
 * the id. Prints one JSON line: per sampling mode, the decode ms of `tokens` tokens after the
 * first and the time to the first token.
 *
 * `deno run -A bench/engine_baseline_child.ts TREE MODEL_DIR TOKENS PROMPT_IDS_JSON MODES_JSON`
 */

const [tree, modelDir, tokensArg, promptJson, modesJson] = Deno.args;
if (!tree || !modelDir || !tokensArg || !promptJson || !modesJson) {
  throw new Error(
    "usage: engine_baseline_child.ts TREE MODEL_DIR TOKENS PROMPT_IDS_JSON MODES_JSON",
  );
}
const tokens = Number(tokensArg);
const prompt = JSON.parse(promptJson) as number[];
const modes = JSON.parse(modesJson) as Record<string, Record<string, unknown>>;

const at = (path: string) => import(new URL(`file://${tree}/${path}`).href);
const core = await at("core/mod.ts");
const { webgpuDecoder } = await at("serve/engine/decoder.ts");
const { chooseToken } = await at("serve/engine/sampling.ts");
// Later refs moved the generator to the base member.
const createRng = core.createRng ?? (await at("base/mod.ts")).createRng;
const load = core.loadModel ?? core.loadChatGLM;

const model = await load(modelDir, { log: () => {}, progressBar: false, dtype: "f32" });
const decoder = webgpuDecoder(model, { slots: 1, ownsModel: false });
const vocab: number = model.config.vocabSize;

async function run(n: number, settings: Record<string, unknown>) {
  const rng = createRng(1);
  const seen = [...prompt];
  const t0 = performance.now();
  let id = chooseToken(await decoder.prefill(0, prompt), vocab, settings, seen, rng);
  const first = performance.now();
  for (let i = 0; i < n; i++) {
    seen.push(id);
    id = chooseToken(await decoder.decode([{ slot: 0, id }]), vocab, settings, seen, rng);
  }
  const end = performance.now();
  decoder.release(0);
  return { decodeMs: end - first, ttftMs: first - t0 };
}

const out: Record<string, { decodeMs: number; ttftMs: number }> = {};
try {
  for (const [mode, settings] of Object.entries(modes)) {
    await run(4, settings); // warm-up: compiles every pipeline
    out[mode] = await run(tokens, settings);
  }
} finally {
  await decoder.close();
  model.dispose();
}
console.log(JSON.stringify(out));
