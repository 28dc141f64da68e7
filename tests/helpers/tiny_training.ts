/**
 * What the training-loop tests share: a small token build of the Med-ChatGLM fixture (tokenized
 * with the tiny model's tokenizer) and a run config on the tiny model over it, in f32, that each
 * test adjusts.
 */
import { buildDataset } from "../../data/build/mod.ts";
import { preset, type TrainConfig } from "../../train/config.ts";

export const TINY_MODEL = new URL("../fixtures/chatglm6b-tiny", import.meta.url).pathname;
const DATASETS = new URL("../fixtures/datasets", import.meta.url).pathname;

/** Builds `records` Med-ChatGLM records (20% validation) into a fresh temp dir. */
export async function buildTinyTrainData(name: string, records: number): Promise<string> {
  const out = await Deno.makeTempDir({ prefix: "medglm-train-data-" });
  await buildDataset({
    name,
    root: DATASETS,
    sources: [{ name: "med_chatglm", paths: ["med-chatglm/data/train.txt"], cap: records }],
    split: { validRatio: 0.2 },
    tokens: { tokenizer: TINY_MODEL, maxSeqLength: 96 },
  }, { out, progress: false });
  return out;
}

/** The demo preset pointed at the tiny model and `data`, writing to `outputDir`, plus `extra`. */
export function tinyTrainConfig(
  data: string,
  outputDir: string,
  extra: Partial<TrainConfig>,
): TrainConfig {
  return {
    ...preset("demo"),
    model: TINY_MODEL,
    data,
    outputDir,
    batchSize: 2,
    evalBatches: 1,
    loggingSteps: 1,
    maxLength: 96,
    dtype: "f32",
    ...extra,
  };
}
