// The chat page as a document: self-contained, CSP hashes matching its inline code, the parts a
// user needs, and a script that compiles.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { CHAT_PAGE_HTML, CHAT_PAGE_SECURITY_POLICY } from "../serve/page/chat_page.ts";

function inline(tag: string): string[] {
  return [...CHAT_PAGE_HTML.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g"))]
    .map((m) => m[1]);
}

Deno.test("the page loads nothing from elsewhere", () => {
  assert.ok(CHAT_PAGE_HTML.startsWith("<!doctype html>"));
  assert.doesNotMatch(CHAT_PAGE_HTML, /https?:\/\//, "no absolute URLs");
  assert.doesNotMatch(CHAT_PAGE_HTML, /\b(src|href)\s*=/i, "no src/href attributes");
  assert.doesNotMatch(CHAT_PAGE_HTML, /<(link|iframe|img|object|embed)\b/i);
  assert.doesNotMatch(CHAT_PAGE_HTML, /@import|url\(/, "no CSS imports or url()");
  assert.doesNotMatch(CHAT_PAGE_HTML, /<script[^>]+src/i);
  // Only same-origin requests in the script.
  const fetches = [...CHAT_PAGE_HTML.matchAll(/fetch\("([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(fetches.sort(), ["/health", "/v1/chat/completions"]);
});

Deno.test("the Content-Security-Policy pins the inline script and style by hash", () => {
  const scripts = inline("script");
  const styles = inline("style");
  assert.equal(scripts.length, 1);
  assert.equal(styles.length, 1);
  const hash = (s: string) => `'sha256-${createHash("sha256").update(s).digest("base64")}'`;
  assert.ok(CHAT_PAGE_SECURITY_POLICY.includes(`script-src ${hash(scripts[0])}`));
  assert.ok(CHAT_PAGE_SECURITY_POLICY.includes(`style-src ${hash(styles[0])}`));
  assert.match(CHAT_PAGE_SECURITY_POLICY, /default-src 'none'/);
  assert.match(CHAT_PAGE_SECURITY_POLICY, /connect-src 'self'/);
  // The script compiles (syntax check without running it).
  new Function(scripts[0]);
  // Model output is only ever set as text, never parsed as HTML.
  assert.doesNotMatch(scripts[0], /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
});

Deno.test("the page has the chat controls, settings, disclaimer and a phone viewport", () => {
  for (
    const id of [
      "input",
      "send",
      "stop",
      "new-chat",
      "toggle-settings",
      "settings",
      "messages",
      "disclaimer",
      "set-temperature",
      "set-top_p",
      "set-max_tokens",
      "set-top_k",
      "set-repetition_penalty",
      "set-seed",
      "set-system",
      "set-api_key",
    ]
  ) {
    assert.match(CHAT_PAGE_HTML, new RegExp(`id="${id}"`), id);
  }
  assert.match(CHAT_PAGE_HTML, /<meta name="viewport" content="width=device-width/);
  assert.match(CHAT_PAGE_HTML, /免责声明/);
  assert.match(CHAT_PAGE_HTML, /不能替代执业医师/);
  assert.match(CHAT_PAGE_HTML, /120/);
  assert.match(CHAT_PAGE_HTML, /@media \(max-width: 600px\)/);
});
