/**
 * The seed's instruction template and the fine-tuning example built from it: prompt ids (text
 * cut to fit, then `[gMASK]`, `<sop>`), target ids, `<eop>`, and labels that supervise from
 * `<sop>` on.
 */
import type { ChatGLMTokenizer } from "../tokenizer/chatglm/tokenizer.ts";
import { IGNORE_INDEX } from "../../core/mod.ts";

export interface InstructionRecord {
  instruction: string;
  input?: string;
}

export interface TrainRecord extends InstructionRecord {
  output: string;
}

/** Labels the loss skips (defined once in core, beside the loss that reads it). */
export { IGNORE_INDEX };

/** `Instruction: …\n[Input: …\n]Answer: ` (the Input line only when input is non-empty). */
export function buildInstructionContext(r: InstructionRecord): string {
  return `Instruction: ${r.instruction}\n` + (r.input ? `Input: ${r.input}\n` : "") + "Answer: ";
}

export interface TrainExampleOptions {
  /** Prompt ids including `[gMASK]`, `<sop>` (default 512). */
  maxSourceLength?: number;
  /** Target ids, without `<eop>` (default 512). */
  maxTargetLength?: number;
  /** Overall cap on inputIds; the target is cut first, then the prompt text. */
  maxSeqLength?: number;
}

export interface TrainExample {
  promptIds: number[];
  targetIds: number[];
  inputIds: number[];
  /** `[-100]·(seqLen − 1)` then `inputIds[seqLen − 1:]` (the first label is `<sop>`). */
  labels: number[];
  /** `promptIds.length`. */
  seqLen: number;
}

export function buildTrainExample(
  tok: ChatGLMTokenizer,
  r: TrainRecord,
  opts: TrainExampleOptions = {},
): TrainExample {
  const maxSource = opts.maxSourceLength ?? 512;
  const maxTarget = opts.maxTargetLength ?? 512;
  const context = buildInstructionContext(r);
  let promptIds = tok.encode(context, { maxLength: maxSource });
  let targetIds = tok.encode(r.output, { special: false, maxLength: maxTarget });
  if (opts.maxSeqLength !== undefined) {
    const max = opts.maxSeqLength;
    if (!Number.isInteger(max) || max < 3) {
      throw new RangeError(`buildTrainExample: maxSeqLength must be an integer >= 3, got ${max}`);
    }
    const room = max - 1 - promptIds.length; // 1 for <eop>
    if (room < 0) {
      // Even an empty target does not fit: cut the prompt text (never [gMASK], <sop>).
      promptIds = tok.encode(context, { maxLength: max - 1 });
      targetIds = [];
    } else if (targetIds.length > room) targetIds = targetIds.slice(0, room);
  }
  const inputIds = [...promptIds, ...targetIds, tok.eopId];
  const seqLen = promptIds.length;
  const labels = inputIds.map((id, i) => (i < seqLen - 1 ? IGNORE_INDEX : id));
  return { promptIds, targetIds, inputIds, labels, seqLen };
}
