// The evaluation on the WebGPU ChatGLM (tiny fixture and the demo model): `fromChatGLMModel` log-likelihoods
// against the CPU reference, and `deno task eval` end to end (base vs two adapters, loglik and
// generate scorers, held-out split), rerun with --resume to identical files without recomputing.
import assert, { deepEqual, equal, match } from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { readChatGLMConfig } from "../core/models/chatglm/config.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import { buildDataset } from "../data/build/mod.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import { parseEvalArgs, runEvaluation } from "../eval/cli.ts";
import { fromChatGLMModel } from "../eval/model.ts";
import { buildMcPrompt } from "../eval/prompts.ts";
import { answerCandidates, continuationLogprobs } from "../eval/scorers/loglik.ts";
import { readMcJson } from "../eval/formats/mod.ts";
import { loadRefWeights, refForward, type RefModel, refRule41 } from "./reference/chatglm.ts";

const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const DEMO = new URL("../models/demo", import.meta.url).pathname;
const DATA = new URL("./fixtures/datasets", import.meta.url).pathname;

let gpuReason = "";
try {
  await getGpu();
} catch (err) {
  gpuReason = (err as Error).message;
  console.log(`eval_gpu: skipped, no WebGPU adapter: ${gpuReason}`);
}

for (const [label, dir] of [["tiny fixture", TINY], ["demo model", DEMO]]) {
  Deno.test({
    name:
      `fromChatGLMModel (${label}): GPU log-likelihoods match the CPU reference (last-position and full paths)`,
    ignore: gpuReason !== "",
    async fn() {
      const config = await readChatGLMConfig(dir);
      const ref: RefModel = { config, weights: await loadRefWeights(dir) };
      const tok = await loadTokenizer(dir);
      const model = await loadModel(dir, { dtype: "f32", maxBatch: 4, log: () => {} });
      try {
        const lm = fromChatGLMModel(model);
        equal(lm.vocabSize, config.vocabSize);
        equal(lm.padId, config.padTokenId);
        const items =
          (await readMcJson(`${DATA}/alpaca-cot/eval/raw/mmcu/test.json`, "mmcu")).items;
        const requests = items.flatMap((item) => {
          const context = tok.encode(buildMcPrompt(item, [], { shots: 0, template: "plain" }));
          return answerCandidates(item).slice(0, 6).map((c) => ({
            context,
            continuation: tok.encode(c, { special: false }),
          }));
        });
        const gpu = await continuationLogprobs(lm, requests, { batchSize: 4 });
        const full = await continuationLogprobs({ ...lm, forwardLast: undefined }, requests, {
          batchSize: 3,
        });
        requests.forEach((r, i) => {
          const ids = [...r.context, ...r.continuation];
          const { mask, pos } = refRule41(ids, config);
          const logits = refForward(ref, ids, 1, ids.length, mask, pos);
          const V = config.vocabSize;
          let want = 0;
          r.continuation.forEach((t, j) => {
            const off = (r.context.length - 1 + j) * V;
            let max = -Infinity;
            for (let v = 0; v < V; v++) max = Math.max(max, logits[off + v]);
            let sum = 0;
            for (let v = 0; v < V; v++) sum += Math.exp(logits[off + v] - max);
            want += logits[off + t] - max - Math.log(sum);
          });
          assert(
            Math.abs(gpu[i] - want) < 2e-3,
            `request ${i}: gpu ${gpu[i]} vs reference ${want}`,
          );
          assert(
            Math.abs(full[i] - want) < 2e-3,
            `request ${i}: full ${full[i]} vs reference ${want}`,
          );
        });
      } finally {
        model.dispose();
      }
    },
  });
}

Deno.test({
  name: "deno task eval end to end: base vs adapters, table, results.json, SVG, --resume",
  ignore: gpuReason !== "",
  async fn() {
    const build = await Deno.makeTempDir({ prefix: "medglm-eval-data-" });
    const out = await Deno.makeTempDir({ prefix: "medglm-eval-out-" });
    try {
      await buildDataset({
        name: "heldout",
        root: DATA,
        sources: [{ name: "med_chatglm", paths: ["med-chatglm/data/train.txt"] }],
        split: { validRatio: 0.3 },
        tokens: { tokenizer: TINY, maxSeqLength: 96 },
      }, { out: build, progress: false });
      const args = [
        "--model",
        TINY,
        "--adapter",
        `${TINY}/adapter-qkv`,
        "--adapter",
        `${TINY}/adapter-multi/`,
        "--tasks",
        `cmmlu:${DATA}/eval/cmmlu,cmb:${DATA}/eval/cmb,promptcblue:${DATA}/eval/promptcblue,` +
        `heldout:${build}`,
        "--shots",
        "1",
        "--limit",
        "2",
        "--open-max-new-tokens",
        "8",
        "--dtype",
        "f32",
        "--out",
        out,
        "--no-progress",
      ];
      const logs: string[] = [];
      const first = await runEvaluation(parseEvalArgs(args)!, (l) => logs.push(l));
      assert(logs.some((l) => l.includes("promptcblue: 1 questions") && l.includes("5 skipped")));
      match(first.table, /^task \/ subject\s+base\s+adapter-qkv\s+adapter-multi$/m);
      match(first.table, /^cmmlu \/ clinical_knowledge(\s+\d+\.\d% \(\d\/2\)){3}$/m);
      match(first.table, /^held-out perplexity(\s+\d+\.\d{3}){3}$/m);
      match(first.table, /^held-out ROUGE-L(\s+\d+\.\d{2}){3}$/m);
      // the adapters change the model: their held-out losses differ from the base
      const losses = first.variants.map((v) => v.heldout!.loss);
      assert(losses[1] !== losses[0] && losses[2] !== losses[0], `losses ${losses}`);
      const json1 = await Deno.readTextFile(first.files.json);
      const svg1 = await Deno.readTextFile(first.files.svg);
      assert(svg1.includes("adapter-multi"));
      // resume: nothing recomputed (the cache files keep their bytes), identical outputs
      const cacheFiles = async () => {
        const m = new Map<string, string>();
        for await (const d of Deno.readDir(`${out}/cache`)) {
          for await (const f of Deno.readDir(`${out}/cache/${d.name}`)) {
            m.set(
              `${d.name}/${f.name}`,
              await Deno.readTextFile(`${out}/cache/${d.name}/${f.name}`),
            );
          }
        }
        return m;
      };
      const before = await cacheFiles();
      equal(before.size, 3 * 5); // 3 variants × (3 tasks + held-out loss + answers)
      const second = await runEvaluation(parseEvalArgs([...args, "--resume"])!, () => {});
      deepEqual(second.variants, first.variants);
      equal(await Deno.readTextFile(second.files.json), json1);
      equal(await Deno.readTextFile(second.files.svg), svg1);
      deepEqual(await cacheFiles(), before);
      // the generate scorer through the real engine: answers parsed or counted unparsed
      const gen = await runEvaluation(
        parseEvalArgs([
          "--model",
          TINY,
          "--tasks",
          `cmmlu:${DATA}/eval/cmmlu`,
          "--scorer",
          "generate",
          "--limit",
          "2",
          "--max-new-tokens",
          "4",
          "--out",
          out,
          "--dtype",
          "f32",
          "--no-progress",
        ])!,
        () => {},
      );
      const o = gen.variants[0].overall;
      equal(o.total, 2);
      assert(o.correct + o.unparsed <= 2);
    } finally {
      await Deno.remove(build, { recursive: true });
      await Deno.remove(out, { recursive: true });
    }
  },
});
