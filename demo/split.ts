/**
 * Which sample Q&A the demo base is trained on and which are left for LoRA (`deno task demo
 * --hold-out-topics`). The base then never sees a block of topics in data/samples/medical_qa.json
 * (children, the elderly, exercise, mood, women's health, eyes, teeth and ears, smoking, organs,
 * skin and infections, hygiene), so a LoRA on all the samples has something new to teach.
 */

import { readFileBytes } from "./files.ts";

export interface SampleQA {
  instruction: string;
  input?: string;
  output: string;
}

/** Sample indices [from, to) that only the LoRA sees (the file is ordered by topic). */
export const LORA_ONLY_SAMPLES = { from: 110, to: 186 } as const;

export function isLoraOnly(index: number): boolean {
  return index >= LORA_ONLY_SAMPLES.from && index < LORA_ONLY_SAMPLES.to;
}

export const SAMPLES_PATH: string =
  new URL("../data/samples/medical_qa.json", import.meta.url).pathname;

export async function readSamples(path = SAMPLES_PATH): Promise<SampleQA[]> {
  const text = new TextDecoder().decode(await readFileBytes(path));
  const rows = JSON.parse(text);
  if (!Array.isArray(rows)) throw new Error(`${path}: expected a JSON array of Q&A records`);
  return rows as SampleQA[];
}

/** One key per Q&A, the same however the record was cleaned of surrounding space. */
export function recordKey(r: SampleQA): string {
  return JSON.stringify([r.instruction.trim(), (r.input ?? "").trim(), r.output.trim()]);
}

/** The records of one split of a data build (its `train-*.jsonl` / `valid-*.jsonl` shards). */
export async function readBuildRecords(
  dir: string,
  split: "train" | "valid",
): Promise<SampleQA[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && new RegExp(`^${split}-\\d{5}\\.jsonl$`).test(e.name)) names.push(e.name);
  }
  const out: SampleQA[] = [];
  for (const name of names.sort()) {
    const text = new TextDecoder().decode(await readFileBytes(`${dir}/${name}`));
    for (const [i, line] of text.split("\n").entries()) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as SampleQA);
      } catch (err) {
        throw new Error(`${dir}/${name}: line ${i + 1} is not JSON (${(err as Error).message})`);
      }
    }
  }
  return out;
}
