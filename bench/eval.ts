/**
 * Evaluation benchmarks: option log-likelihood scoring of the fixture benchmark questions on the
 * tiny ChatGLM (WebGPU, f32). The scorer's last-position path (`forwardLast`: a prefill that reads
 * back [b, V]) against the full forward ([b, s, V] read back) as the baseline in the same run,
 * at batch sizes 1 and 8, as questions per second; and ROUGE-L / BLEU-4 throughput on long
 * Chinese texts.
 */

import { loadChatGLM as loadModel } from "../core/mod.ts";
import { loadChatGLMTokenizer as loadTokenizer } from "../data/mod.ts";
import {
  bleu4,
  buildMcPrompt,
  fromChatGLMModel,
  loadTask,
  type LogitsModel,
  rougeL,
  scoreLoglik,
} from "../eval/mod.ts";

const TINY = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;
const DATA = new URL("../tests/fixtures/datasets", import.meta.url).pathname;

async function timeIt(fn: () => Promise<void>, minMs = 1500): Promise<number> {
  await fn(); // warm-up (pipeline compiles)
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < minMs) {
    await fn();
    n++;
  }
  return (performance.now() - t0) / n;
}

export async function bench(): Promise<void> {
  const tok = await loadTokenizer(TINY);
  const model = await loadModel(TINY, { dtype: "f32", maxBatch: 8, log: () => {} });
  try {
    const cmmlu = await loadTask({ kind: "cmmlu", path: `${DATA}/eval/cmmlu`, name: "cmmlu" });
    const questions = cmmlu.items.map((item) => ({
      item,
      prompt: buildMcPrompt(item, cmmlu.dev, { shots: 1, template: "plain" }),
      key: item.id,
    }));
    const last = fromChatGLMModel(model);
    const full: LogitsModel = { ...last, forwardLast: undefined };
    const rows: string[][] = [["case", "batch", "ms / run", "questions/s", "vs full forward"]];
    for (const batchSize of [1, 8]) {
      const base = await timeIt(async () => {
        await scoreLoglik(questions, tok, full, { batchSize });
      });
      const fast = await timeIt(async () => {
        await scoreLoglik(questions, tok, last, { batchSize });
      });
      const qps = (ms: number) => (questions.length / (ms / 1000)).toFixed(1);
      rows.push(["loglik, full forward", String(batchSize), base.toFixed(1), qps(base), "1.00×"]);
      rows.push([
        "loglik, last position",
        String(batchSize),
        fast.toFixed(1),
        qps(fast),
        `${(base / fast).toFixed(2)}×`,
      ]);
    }
    const cand = "患者应注意休息，多喝温水，必要时服用退烧药物并及时就医。".repeat(20);
    const ref = "建议患者多休息、多饮水，如发热持续不退应及时到医院就诊。".repeat(20);
    const n = 20;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      rougeL(cand, ref);
      bleu4(cand, ref);
    }
    const ms = (performance.now() - t0) / n;
    rows.push([`ROUGE-L + BLEU-4, ${[...cand].length} chars`, "-", ms.toFixed(2), "-", "-"]);
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    console.log("eval (tiny ChatGLM on this adapter, 6 CMMLU questions, 1-shot)");
    for (const r of rows) console.log(r.map((s, c) => s.padEnd(widths[c])).join("  ").trimEnd());
  } finally {
    model.dispose();
  }
}

if (import.meta.main) await bench();
