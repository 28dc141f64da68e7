/** Splitting long answers into Telegram messages at sentence boundaries. */
import assert from "node:assert/strict";
import { findCut, splitMessage, TELEGRAM_TEXT_LIMIT } from "../bot/split_text.ts";

Deno.test("short texts stay whole; long ones split after a sentence end within the limit", () => {
  assert.deepEqual(splitMessage("你好。"), ["你好。"]);
  assert.deepEqual(splitMessage("  \n "), []);
  const text = "第一句话。第二句话！第三句话？第四句";
  const parts = splitMessage(text, 12);
  assert.deepEqual(parts, ["第一句话。第二句话！", "第三句话？第四句"]);
});

Deno.test("English periods split only before whitespace; closing quotes stay with the sentence", () => {
  assert.deepEqual(splitMessage("Take 2.5 mg daily. Rest well.", 24), [
    "Take 2.5 mg daily.",
    "Rest well.",
  ]);
  assert.deepEqual(splitMessage("他说：“多喝水。”然后离开了", 10), [
    "他说：“多喝水。”",
    "然后离开了",
  ]);
});

Deno.test("without sentence ends it breaks at a comma, else hard, never inside a surrogate pair", () => {
  assert.deepEqual(splitMessage("一二三四五，六七八九十一二", 8), [
    "一二三四五，",
    "六七八九十一二",
  ]);
  const emoji = "😀".repeat(10); // 20 UTF-16 units
  const parts = splitMessage(emoji, 7);
  assert.equal(parts.join(""), emoji);
  for (const p of parts) {
    assert.ok(p.length <= 7);
    assert.equal([...p].join(""), p);
    assert.ok(!/[\ud800-\udbff]$/.test(p));
  }
});

Deno.test("a 5000-character answer becomes two messages, each within Telegram's limit", () => {
  const sentence = "饮食要清淡，少盐少油，多吃蔬菜水果，保持规律作息。"; // 25 chars
  const text = sentence.repeat(200);
  const parts = splitMessage(text);
  assert.equal(parts.length, 2);
  assert.ok(parts.every((p) => p.length <= TELEGRAM_TEXT_LIMIT));
  assert.ok(parts[0].endsWith("。"));
  assert.equal(parts.join(""), text);
  // The cut depends only on the first `limit` characters (so streaming splits the same way).
  assert.equal(findCut(text.slice(0, TELEGRAM_TEXT_LIMIT + 1)), findCut(text));
});
