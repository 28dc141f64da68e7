/** ChatGLM-6B's `process_response`: what the user sees of a decoded answer. */
import { pyStrip } from "../tokenizer/chatglm/text.ts";

// Half-width punctuation next to a CJK ideograph becomes full-width (NFKC folded it on encode).
// No `u` flag: the pattern works on UTF-16 units, exactly as the Python original on code points
// for this BMP range.
const PUNCT: [string, string][] = [[",", "，"], ["!", "！"], [":", "："], [";", "；"], ["?", "？"]];
const RULES = PUNCT.map(([x, y]) => {
  const e = x === "?" ? "\\?" : x;
  return {
    before: new RegExp(`([\\u4e00-\\u9fff])${e}`, "g"),
    after: new RegExp(`${e}([\\u4e00-\\u9fff])`, "g"),
    y,
  };
});

export function processResponse(text: string): string {
  let s = pyStrip(text).replaceAll("[[训练时间]]", "2023年");
  for (const r of RULES) {
    s = s.replace(r.before, `$1${r.y}`).replace(r.after, `${r.y}$1`);
  }
  return s;
}
