/**
 * The token stage: each cleaned record becomes a training example through the prompt module, in
 * the configured prompt format — `instruction` (the seed's template with ChatGLM's tokenizer:
 * `[gMASK]` `<sop>`, target, `<eop>`) or `chat-template` (the model's own chat template, only the
 * final assistant turn supervised: data/prompt/template_example.ts) — labels -100 on the prompt,
 * with truncation to the configured lengths. A record whose untruncated example exceeds
 * `maxTokens` is dropped with a warning instead. Earlier turns (`history`) are not part of the
 * instruction template, so they are left out of its example (and counted); the chat template
 * keeps them as earlier, unsupervised turns.
 */

import { buildTrainExample } from "../prompt/instruction.ts";
import { type ChatTemplate, compileChatTemplate } from "../prompt/chat_template.ts";
import { buildTemplateTrainExample } from "../prompt/template_example.ts";
import type { AnyTokenizer } from "../tokenizer/load.ts";
import type { CleanRecord } from "../clean/clean.ts";
import { count, type Tally, warn } from "../clean/tally.ts";
import type { ResolvedConfig } from "./config.ts";

export interface Example {
  inputIds: number[];
  labels: number[];
  seqLen: number;
}

type TokenSettings = NonNullable<ResolvedConfig["tokens"]>;

const UNLIMITED = 1 << 30;

const templates = new WeakMap<AnyTokenizer, ChatTemplate>();

/** The chat template of a tokenizer, compiled once; a clear error when it has none. */
function templateOf(tok: AnyTokenizer): ChatTemplate {
  let t = templates.get(tok);
  if (!t) {
    const configPath = tok.source.replace(/[^/]*$/, "") + "tokenizer_config.json";
    if (!tok.chatTemplate) {
      throw new Error(
        `tokens.promptFormat "chat-template": ${configPath} has no chat_template ` +
          `(use promptFormat "instruction" with a ChatGLM tokenizer)`,
      );
    }
    t = compileChatTemplate(tok.chatTemplate, configPath);
    templates.set(tok, t);
  }
  return t;
}

/**
 * Checks that the tokenizer can make examples in the configured format (before minutes of
 * reading): the instruction format needs ChatGLM's tokenizer, the chat template a template.
 */
export function checkPromptFormat(tok: AnyTokenizer, t: TokenSettings): void {
  if (t.promptFormat === "chat-template") templateOf(tok);
  else if (tok.kind !== "chatglm") {
    throw new Error(
      `tokens.promptFormat "instruction" needs ChatGLM-6B's tokenizer ([gMASK] <sop> … <eop>), ` +
        `and ${tok.source} is a ${tok.kind} tokenizer: use promptFormat "chat-template" ` +
        "(--prompt-format chat-template) for this model",
    );
  }
}

/** One record's example, or null when it is longer than `maxTokens` (warned and counted). */
export function tokenizeRecord(
  tok: AnyTokenizer,
  r: CleanRecord,
  t: TokenSettings,
  tally: Tally,
): Example | null {
  checkPromptFormat(tok, t);
  const rec = { instruction: r.instruction, input: r.input, output: r.output };
  const template = t.promptFormat === "chat-template" ? templateOf(tok) : null;
  const make = (o: Parameters<typeof buildTrainExample>[2]) =>
    template
      ? buildTemplateTrainExample(tok, template, { ...rec, history: r.history }, o)
      : buildTrainExample(tok as Extract<AnyTokenizer, { kind: "chatglm" }>, rec, o);
  // Encode once without limits: most records fit, and the full length is what maxTokens checks.
  let ex = make({ maxSourceLength: UNLIMITED, maxTargetLength: UNLIMITED });
  const full = ex.inputIds.length;
  if (t.maxTokens !== null && full > t.maxTokens) {
    const m = /^(.*):(\d+)(?:#\d+)?$/.exec(r.origin);
    warn(tally, {
      file: m ? m[1] : r.origin,
      ...(m ? { line: Number(m[2]) } : {}),
      action: "too-long",
      reason: `${full} tokens > maxTokens ${t.maxTokens}`,
    });
    return null;
  }
  if (
    ex.promptIds.length > t.maxSourceLength || ex.targetIds.length > t.maxTargetLength ||
    full > t.maxSeqLength
  ) {
    ex = make({
      maxSourceLength: t.maxSourceLength,
      maxTargetLength: t.maxTargetLength,
      maxSeqLength: t.maxSeqLength,
    });
    count(tally, "truncated");
  }
  if (r.history && !template) count(tally, "history-not-in-prompt");
  return { inputIds: ex.inputIds, labels: ex.labels, seqLen: ex.seqLen };
}

/**
 * Length bucketing: inside consecutive windows of `window` examples (already shuffled), order by
 * length, so a trainer reading in order gets batches of similar length with little padding while
 * the mix across windows stays random. Returns the new order as indices; the sort is stable.
 */
export function bucketOrder(lengths: readonly number[], window: number): number[] {
  const order: number[] = [];
  for (let s = 0; s < lengths.length; s += window) {
    const idx: number[] = [];
    for (let i = s; i < Math.min(lengths.length, s + window); i++) idx.push(i);
    idx.sort((a, b) => lengths[a] - lengths[b] || a - b);
    order.push(...idx);
  }
  return order;
}

/** Histogram of example lengths in power-of-two bins (`[0,16)`, `[16,32)`, … `[2048,∞)`). */
export function lengthHistogram(lengths: Iterable<number>): { range: string; count: number }[] {
  const edges = [16, 32, 64, 128, 256, 512, 1024, 2048];
  const counts = new Array(edges.length + 1).fill(0);
  for (const n of lengths) {
    let b = 0;
    while (b < edges.length && n >= edges[b]) b++;
    counts[b]++;
  }
  return counts.map((c, b) => ({
    range: b === 0
      ? `<${edges[0]}`
      : b === edges.length
      ? `>=${edges[b - 1]}`
      : `${edges[b - 1]}-${edges[b] - 1}`,
    count: c,
  }));
}
