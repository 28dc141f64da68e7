/**
 * Which sample Q&A the demo base learns and which the quick start's LoRA teaches it. The base is
 * trained fully on data/configs/demo-base.json (data/samples/medical_qa.json: colds, diet, sleep,
 * chronic illness, first aid, medicines …); the quick start (`deno task train`, and the LoRA of
 * `deno task demo`) trains on data/configs/demo.json: topics the base never sees
 * (data/samples/new_topics.json: children, the elderly, exercise, mood, women's health, eyes,
 * teeth and ears, smoking, organs, skin and infections, hygiene), evaluated on 24 of those
 * questions reworded with the same answers (new_topics_reworded.json), so that a falling eval
 * loss means the adapter learned the new answers, not one exact wording.
 */

import { readFileBytes } from "./files.ts";

export interface SampleQA {
  instruction: string;
  input?: string;
  output: string;
}

const here = (p: string) => new URL(p, import.meta.url).pathname;

/** The base's data build config (every record for training). */
export const DEMO_BASE_DATA_CONFIG: string = here("../data/configs/demo-base.json");
/** The base's Q&A. */
export const BASE_SAMPLES_PATH: string = here("../data/samples/medical_qa.json");
/** The quick start's training Q&A (topics the base never sees). */
export const NEW_TOPICS_PATH: string = here("../data/samples/new_topics.json");
/** The quick start's validation: some new-topic questions reworded, answers unchanged. */
export const REWORDED_PATH: string = here("../data/samples/new_topics_reworded.json");

export async function readSamples(path = BASE_SAMPLES_PATH): Promise<SampleQA[]> {
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
