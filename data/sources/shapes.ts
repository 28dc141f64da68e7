/**
 * The record shapes of the three sources, recognised by their field sets, and the mapping of each
 * item onto `{instruction, input, output, history?}`. The usability rule (expected.json): an
 * object whose instruction and output are non-empty strings after trim and whose input is a
 * string, null or missing.
 */

export type ItemShape = "alpaca" | "context-target";

/** The fields of a normalized item, before `source` and `origin` are attached. */
export interface ItemFields {
  instruction: string;
  input: string;
  output: string;
  history?: [string, string][];
}

/** An item that cannot be used, with the action counter it belongs to. */
export interface ItemDrop {
  action: "dropped-type" | "dropped-empty";
  reason: string;
}

/** Evaluation-set layouts, recognised by fields that all must be present. */
const EVAL_SIGNATURES: { name: string; fields: string[] }[] = [
  { name: "MMCU (类别/题目/选项/答案)", fields: ["题目", "选项", "答案"] },
  { name: "CMB questions", fields: ["question", "option", "answer"] },
  { name: "CMB answers", fields: ["id", "question_type", "answer"] },
  { name: "PromptCBLUE", fields: ["input", "target", "task_type"] },
  { name: "Huatuo CMCOQA (open questions, no answers)", fields: ["question", "ICD-10"] },
  { name: "CMMLU (Question/A/B/C/D/Answer)", fields: ["Question", "A", "B", "Answer"] },
];

/** Recognises an evaluation layout from one item's (or header's) field names. */
export function evalLayout(fields: Iterable<string>): string | null {
  const set = new Set(fields);
  for (const sig of EVAL_SIGNATURES) if (sig.fields.every((f) => set.has(f))) return sig.name;
  return null;
}

/** Counts shapes and field names item by item (for streamed files); `result()` as `detectShape`. */
export interface ShapeCounter {
  add(item: unknown): void;
  result(): { shape: ItemShape | null; fields: string[] };
}

export function createShapeCounter(): ShapeCounter {
  let alpaca = 0, ct = 0;
  const fields = new Map<string, number>();
  return {
    add(item) {
      if (!isObject(item)) return;
      const o = item as Record<string, unknown>;
      for (const k of Object.keys(o)) fields.set(k, (fields.get(k) ?? 0) + 1);
      if ("instruction" in o && "output" in o) alpaca++;
      else if ("context" in o && "target" in o) ct++;
    },
    result() {
      const found = [...fields.entries()].sort((a, b) => b[1] - a[1] || cmp(a[0], b[0])).map((
        e,
      ) => e[0]);
      if (alpaca === 0 && ct === 0) return { shape: null, fields: found };
      return { shape: alpaca >= ct ? "alpaca" : "context-target", fields: found };
    },
  };
}

/** The shape of a list of items: the one most objects match, or null with the fields found. */
export function detectShape(items: unknown[]): { shape: ItemShape | null; fields: string[] } {
  const counter = createShapeCounter();
  for (const item of items) counter.add(item);
  return counter.result();
}

export function isObject(v: unknown): boolean {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Maps one item of `shape` onto record fields, or says why it cannot be used. */
export function mapItem(item: unknown, shape: ItemShape): ItemFields | ItemDrop {
  if (!isObject(item)) {
    return { action: "dropped-type", reason: `item is ${typeName(item)}, not an object` };
  }
  const o = item as Record<string, unknown>;
  return shape === "alpaca" ? mapAlpaca(o) : mapContextTarget(o);
}

function requireText(
  o: Record<string, unknown>,
  key: string,
): string | ItemDrop {
  const v = o[key];
  if (v === undefined) return { action: "dropped-type", reason: `no "${key}" field` };
  if (v === null) return { action: "dropped-empty", reason: `"${key}" is null` };
  if (typeof v !== "string") {
    return { action: "dropped-type", reason: `"${key}" is ${typeName(v)}, not a string` };
  }
  if (v.trim() === "") return { action: "dropped-empty", reason: `empty "${key}"` };
  return v;
}

function mapAlpaca(o: Record<string, unknown>): ItemFields | ItemDrop {
  const instruction = requireText(o, "instruction");
  if (typeof instruction !== "string") return instruction;
  const output = requireText(o, "output");
  if (typeof output !== "string") return output;
  const inp = o.input;
  if (inp !== undefined && inp !== null && typeof inp !== "string") {
    return { action: "dropped-type", reason: `"input" is ${typeName(inp)}, not a string` };
  }
  const fields: ItemFields = { instruction, input: typeof inp === "string" ? inp : "", output };
  const history = historyPairs(o.history);
  if (history && history.length > 0) fields.history = history;
  return fields;
}

// LLaMA-Factory style history is a list of [question, answer] pairs; the code-questions file has
// `"history": ""` (a string), which means no history.
function historyPairs(v: unknown): [string, string][] | null {
  if (!Array.isArray(v)) return null;
  const out: [string, string][] = [];
  for (const pair of v) {
    if (
      Array.isArray(pair) && pair.length === 2 && typeof pair[0] === "string" &&
      typeof pair[1] === "string"
    ) out.push([pair[0], pair[1]]);
    else return null;
  }
  return out;
}

const CONTEXT_FRAME = /^\s*问题[：:]\s*([\s\S]*?)\s*回答[：:]\s*$/;

function mapContextTarget(o: Record<string, unknown>): ItemFields | ItemDrop {
  const context = requireText(o, "context");
  if (typeof context !== "string") return context;
  const target = requireText(o, "target");
  if (typeof target !== "string") return target;
  const m = CONTEXT_FRAME.exec(context);
  const instruction = m ? m[1] : context;
  if (instruction.trim() === "") return { action: "dropped-empty", reason: "empty question" };
  return { instruction, input: "", output: target };
}

/** True when `text` holds the Huatuo literature `<user>: … <bot>: …` packed dialogue. */
export function isPackedDialogue(text: string): boolean {
  return text.includes("<user>:") || text.includes("<user>：");
}

const TURN = /<(user|bot)>[:：]/g;

/**
 * Splits a packed dialogue into earlier `[user, bot]` pairs and the last user turn. Returns null
 * when the turns do not alternate user/bot and end with a user turn.
 */
export function unpackDialogue(
  text: string,
): { instruction: string; history: [string, string][] } | null {
  const turns: { role: string; text: string }[] = [];
  let m: RegExpExecArray | null;
  let last: { role: string; start: number } | null = null;
  TURN.lastIndex = 0;
  const lead = text.slice(0, text.search(TURN) < 0 ? 0 : text.search(TURN));
  if (lead.trim() !== "") return null;
  while ((m = TURN.exec(text)) !== null) {
    if (last) turns.push({ role: last.role, text: text.slice(last.start, m.index).trim() });
    last = { role: m[1], start: m.index + m[0].length };
  }
  if (!last) return null;
  turns.push({ role: last.role, text: text.slice(last.start).trim() });
  if (turns.length % 2 !== 1) return null;
  const history: [string, string][] = [];
  for (let i = 0; i < turns.length; i++) {
    if (turns[i].role !== (i % 2 === 0 ? "user" : "bot") || turns[i].text === "") return null;
  }
  for (let i = 0; i + 1 < turns.length; i += 2) history.push([turns[i].text, turns[i + 1].text]);
  return { instruction: turns[turns.length - 1].text, history };
}

/**
 * The Chinese-medical-dialogue-data row `department,title,ask,answer` as an instruction record.
 * Design choice: the instruction is the role-play line from that
 * project's README, `现在你是一个{department}医生，请根据患者的问题给出建议：`, the patient's `ask` is
 * the input (the `title` only when `ask` is empty: titles are truncated copies of the question),
 * and `answer` is the output.
 */
export function medicalDialogueRow(
  department: string,
  title: string,
  ask: string,
  answer: string,
): ItemFields | ItemDrop {
  const question = ask.trim() !== "" ? ask : title;
  if (question.trim() === "") return { action: "dropped-empty", reason: "empty ask and title" };
  if (answer.trim() === "") return { action: "dropped-empty", reason: "empty answer" };
  const dept = department.trim();
  const role = dept === "" ? "" : dept.endsWith("医生") ? dept.slice(0, -2) : dept;
  return {
    instruction: `现在你是一个${role}医生，请根据患者的问题给出建议：`,
    input: question,
    output: answer,
  };
}
