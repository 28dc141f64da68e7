// Cleaning: safe repairs, language tags, de-duplication keys and the per-action tally.
import assert from "node:assert/strict";
import {
  cleanRecord,
  createDeduper,
  createTally,
  DEFAULT_CLEAN_OPTIONS,
  languageOf,
  normalizedKey,
  repairText,
  substitute,
} from "../data/clean/mod.ts";
import type { SourceRecord } from "../data/sources/mod.ts";

function rec(instruction: string, output: string, input = "", origin = "a.json:3"): SourceRecord {
  return { instruction, input, output, source: "s", origin };
}

Deno.test("repairText: trim, CRLF, literal \\n only where no real newline exists", () => {
  assert.deepEqual(repairText("  你好 ", true), {
    text: "你好",
    trimmed: true,
    literalNewlines: false,
  });
  assert.equal(repairText("Step one\\nStep two", true).text, "Step one\nStep two");
  assert.equal(repairText("Step one\\nStep two", false).text, "Step one\\nStep two");
  assert.equal(repairText('print("a\\nb")\nok', true).text, 'print("a\\nb")\nok', "kept in code");
  assert.equal(repairText("path C:\\\\new", true).text, "path C:\\\\new", "an escaped backslash");
  assert.equal(repairText("a\r\nb", true).text, "a\nb");
});

Deno.test("substitute: whole-word placeholders", () => {
  const t = { NAME: "MedGLM", AUTHOR: "medglm 团队" };
  assert.equal(substitute("我是 NAME，由 AUTHOR 开发。", t), "我是 MedGLM，由 medglm 团队 开发。");
  assert.equal(substitute("NAMES and RENAME stay", t), "NAMES and RENAME stay");
});

Deno.test("languageOf: zh, en, other", () => {
  assert.equal(languageOf("高血压患者平时要注意什么？"), "zh");
  assert.equal(languageOf("Python中如何定义函数"), "zh");
  assert.equal(languageOf("Give three tips for staying healthy."), "en");
  assert.equal(languageOf("12 + 7 = 19"), "other");
});

Deno.test("normalized key: width, spacing, case and final punctuation fold; symbols stay", () => {
  const a = normalizedKey(rec("感冒了怎么办？", "多喝水。"));
  assert.equal(normalizedKey(rec("感冒了 怎么办?", "多喝水")), a);
  assert.equal(normalizedKey(rec("感冒了\u3000怎么办", "多喝水\u00a0。")), a);
  assert.equal(normalizedKey(rec("ＡＢＣ是什么", "x")), normalizedKey(rec("abc 是什么", "x")));
  assert.notEqual(normalizedKey(rec("1+1=?", "2")), normalizedKey(rec("1-1=?", "2")));
});

Deno.test("cleanRecord and dedup: drops are warned with file and line, first occurrence wins", () => {
  const tally = createTally();
  const opts = { ...DEFAULT_CLEAN_OPTIONS };
  assert.equal(cleanRecord(rec("  ", "答"), opts, tally), null);
  assert.deepEqual(tally.warnings[0], {
    file: "a.json",
    line: 3,
    action: "dropped-empty",
    reason: "empty instruction after cleaning",
  });
  const en = cleanRecord(rec("What is a cold?", "A viral infection."), opts, tally)!;
  assert.equal(en.lang, "en");
  assert.equal(cleanRecord(rec("What?", "x"), { ...opts, languages: ["zh"] }, tally), null);
  assert.equal(tally.counts["dropped-language"], 1);
  assert.equal(cleanRecord(rec("问", "很长的回答"), { ...opts, maxChars: 3 }, tally), null);
  assert.equal(tally.counts["too-long"], 1);

  const dd = createDeduper("normalized", tally);
  assert.equal(dd.add(rec("感冒了怎么办？", "多喝水。", "", "x.json:1")), true);
  assert.equal(dd.add(rec("感冒了怎么办？", "多喝水。", "", "y.json:9")), false);
  assert.equal(dd.add(rec("感冒了怎么办", "多喝水", "", "z.json:2#4")), false);
  assert.equal(dd.add(rec("感冒了怎么办", "多休息", "", "z.json:3")), true);
  assert.equal(tally.counts["duplicate-exact"], 1);
  assert.equal(tally.counts["duplicate-normalized"], 1);
  const w = tally.warnings.find((x) => x.action === "duplicate-normalized")!;
  assert.equal(w.file, "z.json");
  assert.equal(w.line, 2);
  assert.match(w.reason, /x\.json:1/);
  const exactOnly = createDeduper("exact", createTally());
  assert.equal(exactOnly.add(rec("a", "b")), true);
  assert.equal(exactOnly.add(rec("a ", "b")), true, "exact keys see every character");
});

Deno.test("tally: counts stay exact past the per-action warning limit", () => {
  const tally = createTally(2);
  const dd = createDeduper("exact", tally);
  for (let i = 0; i < 5; i++) dd.add(rec("同一个问题", "同一个回答", "", `f.json:${i + 1}`));
  assert.equal(tally.counts["duplicate-exact"], 4);
  assert.equal(tally.warnings.length, 2);
  assert.equal(tally.omitted["duplicate-exact"], 2);
});
