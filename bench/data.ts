/**
 * Data build throughput: 200k synthetic records (deterministic) in the three container formats
 * (JSON array, JSON Lines, GB18030-free CSV), built end to end with tokenization, in a temp dir.
 * Prints records/s for the whole pipeline and per stage, against the target (100k records/min)
 * and against a baseline measured in the same run: reading + `JSON.parse` of the same files.
 */

import { buildDataset } from "../data/mod.ts";
import { createRng, seedFor } from "../base/mod.ts";

const TOKENIZER = new URL("../tests/fixtures/chatglm-tokenizer", import.meta.url).pathname;
const SYMPTOMS = [
  "头痛",
  "发热",
  "咳嗽",
  "失眠",
  "胃痛",
  "腹泻",
  "过敏",
  "高血压",
  "血糖偏高",
  "腰痛",
];
const PEOPLE = ["孩子", "老人", "孕妇", "我", "家人", "同事"];
const ADVICE = [
  "注意休息，多喝温水",
  "清淡饮食，规律作息",
  "避免熬夜和剧烈运动",
  "按医嘱用药，不要自行加量",
  "记录症状变化",
];

function synthetic(
  n: number,
  seed: string,
): { instruction: string; input: string; output: string }[] {
  const r = createRng(seedFor(seed, "bench"));
  const rng = () => r.nextU32();
  const pick = <T>(a: T[]) => a[rng() % a.length];
  const out = [];
  for (let i = 0; i < n; i++) {
    const s = pick(SYMPTOMS), p = pick(PEOPLE);
    out.push({
      instruction: `${p}最近${s}已经${1 + (rng() % 14)}天了，应该怎么处理？（病例${i}）`,
      input: rng() % 3 === 0 ? `年龄${18 + (rng() % 60)}岁，既往体健。` : "",
      output: `${pick(ADVICE)}；${pick(ADVICE)}。如果${s}持续不缓解或出现加重，请及时到医院就诊。` +
        (rng() % 4 === 0 ? " If symptoms persist, please see a doctor." : ""),
    });
  }
  return out;
}

function csvCell(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

async function writeSources(dir: string, total: number): Promise<void> {
  const third = Math.floor(total / 3);
  const a = synthetic(third, "array");
  const b = synthetic(third, "jsonl");
  const c = synthetic(total - 2 * third, "csv");
  await Deno.writeTextFile(`${dir}/array.json`, JSON.stringify(a, null, 2));
  await Deno.writeTextFile(`${dir}/lines.jsonl`, b.map((r) => JSON.stringify(r)).join("\n") + "\n");
  await Deno.writeTextFile(
    `${dir}/table.csv`,
    "instruction,input,output\n" +
      c.map((r) => [r.instruction, r.input, r.output].map(csvCell).join(",")).join("\n") + "\n",
  );
}

export async function bench(records = 200_000): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "medglm-bench-data-" });
  try {
    await writeSources(dir, records);
    // baseline: read and parse the JSON sources (the floor of any reader)
    let t = performance.now();
    const arr = JSON.parse(await Deno.readTextFile(`${dir}/array.json`)) as unknown[];
    const lines = (await Deno.readTextFile(`${dir}/lines.jsonl`)).split("\n").filter((l) => l)
      .map((l) => JSON.parse(l));
    const baseSecs = (performance.now() - t) / 1000;
    const baseRate = (arr.length + lines.length) / baseSecs;

    t = performance.now();
    const res = await buildDataset({
      name: "bench",
      sources: [{ name: "syn", paths: ["array.json", "lines.jsonl", "table.csv"] }],
      tokens: { tokenizer: TOKENIZER, maxSourceLength: 256, maxTargetLength: 256 },
    }, { baseDir: dir, out: `${dir}/out`, progress: false });
    const secs = (performance.now() - t) / 1000;
    const m = res.manifest;
    const n = m.counts.read;
    const rate = n / secs;
    const rows: [string, string, string][] = [
      ["stage", "seconds", "records/s"],
      ["read + clean + dedup", res.timings.read.toFixed(2), (n / res.timings.read).toFixed(0)],
      ["tokenize", res.timings.tokens.toFixed(2), (n / res.timings.tokens).toFixed(0)],
      ["split + write shards", res.timings.write.toFixed(2), (n / res.timings.write).toFixed(0)],
      ["whole pipeline", secs.toFixed(2), rate.toFixed(0)],
      ["baseline: read + JSON.parse", baseSecs.toFixed(2), baseRate.toFixed(0)],
    ];
    const w = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
    console.log(
      `data build: ${n} synthetic records, ${m.split.train} train / ${m.split.valid} valid, ` +
        `${m.tokens!.totalTokens.train + m.tokens!.totalTokens.valid} tokens`,
    );
    for (const r of rows) {
      console.log(r.map((v, c) => (c === 0 ? v.padEnd(w[c]) : v.padStart(w[c]))).join("  "));
    }
    console.log(
      `records/min ${(rate * 60).toFixed(0)}; target 100000/min: ${
        (rate * 60 / 100000).toFixed(2)
      }x; ` +
        `pipeline / baseline: ${(rate / baseRate).toFixed(3)}x`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await bench(Number(Deno.args[0] ?? 200_000));
