/**
 * The web chat page served at `/`: one self-contained HTML document (inline CSS and JS, no build
 * step, nothing fetched from elsewhere). It streams answers from `/v1/chat/completions` as server
 * events, keeps the multi-turn history in the page, and has stop, new chat, sampling settings,
 * an optional API key, and the medical disclaimer. Text is only ever set with `textContent`, so
 * model output cannot inject markup.
 */
import { createHash } from "node:crypto";

const STYLE = `
:root {
  --bg: #f5f7f8; --panel: #ffffff; --text: #1d2730; --muted: #5d6b78; --line: #d8dee4;
  --accent: #0b7a75; --accent-text: #ffffff; --user: #e2f3f1; --warn-bg: #fff6e0;
  --warn-line: #e8c36a; --error: #b3261e;
  color-scheme: light;
}
* { box-sizing: border-box; }
html, body { height: 100%; margin: 0; }
body {
  font: 16px/1.6 system-ui, -apple-system, "Segoe UI", "PingFang SC", "Hiragino Sans GB",
    "Microsoft YaHei", "Noto Sans CJK SC", sans-serif;
  background: var(--bg); color: var(--text);
  display: flex; flex-direction: column; height: 100vh; height: 100dvh; overflow: hidden;
}
header {
  display: flex; align-items: center; gap: 8px; padding: 8px 16px;
  background: var(--panel); border-bottom: 1px solid var(--line); flex-wrap: wrap;
}
header h1 { font-size: 18px; margin: 0; white-space: nowrap; }
#status { font-size: 13px; color: var(--muted); flex: 1 1 0; min-width: 0;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#status.ready::before { content: "●"; color: var(--accent); margin-right: 4px; }
#status.down::before { content: "●"; color: var(--error); margin-right: 4px; }
button {
  font: inherit; font-size: 14px; border-radius: 8px; border: 1px solid var(--line);
  background: var(--panel); color: var(--text); padding: 6px 12px; cursor: pointer;
  min-height: 36px;
}
button:hover { border-color: var(--accent); }
button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-text); }
button:disabled { opacity: 0.5; cursor: default; }
button:focus-visible, textarea:focus-visible, input:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 1px;
}
#disclaimer {
  margin: 0; padding: 6px 16px; font-size: 13px; line-height: 1.5; background: var(--warn-bg);
  border-bottom: 1px solid var(--warn-line);
}
#settings {
  background: var(--panel); border-bottom: 1px solid var(--line); padding: 12px 16px;
  display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px 16px;
  max-height: 50vh; overflow-y: auto;
}
#settings[hidden] { display: none; }
#settings label { display: flex; flex-direction: column; font-size: 13px; color: var(--muted); gap: 2px; }
#settings label.wide { grid-column: 1 / -1; }
#settings label.check { flex-direction: row; align-items: center; gap: 6px; }
#settings label.check input { width: auto; }
#settings input, #settings textarea {
  font: inherit; font-size: 14px; padding: 4px 8px; border: 1px solid var(--line);
  border-radius: 6px; color: var(--text); background: var(--panel); width: 100%;
}
#settings textarea { min-height: 3em; resize: vertical; }
main { flex: 1 1 auto; overflow-y: auto; padding: 16px; scroll-behavior: smooth; }
#messages { max-width: 820px; margin: 0 auto; display: flex; flex-direction: column; gap: 12px; }
#empty { color: var(--muted); text-align: center; margin-top: 12vh; padding: 0 8px; }
.msg { max-width: 88%; padding: 10px 14px; border-radius: 14px; white-space: pre-wrap;
  overflow-wrap: anywhere; word-break: break-word; }
.msg.user { align-self: flex-end; background: var(--user); border-bottom-right-radius: 4px; }
.msg.assistant { align-self: flex-start; background: var(--panel); border: 1px solid var(--line);
  border-bottom-left-radius: 4px; }
.msg.assistant.streaming .text::after { content: "▍"; color: var(--accent); animation: blink 1s steps(2) infinite; }
@keyframes blink { 50% { opacity: 0; } }
.msg .meta { display: block; margin-top: 4px; font-size: 12px; color: var(--muted); white-space: normal; }
.msg .meta:empty { display: none; }
.msg.error .meta, .notice.error { color: var(--error); }
form#composer {
  display: flex; gap: 8px; align-items: flex-end;
  padding: 10px max(16px, calc((100% - 820px) / 2));
  padding-bottom: max(10px, env(safe-area-inset-bottom));
  background: var(--panel); border-top: 1px solid var(--line);
}
#input {
  flex: 1 1 auto; min-width: 0; font: inherit; resize: none; padding: 8px 10px; max-height: 30vh;
  border: 1px solid var(--line); border-radius: 10px; background: var(--panel); color: var(--text);
}
#stop[hidden], #send[hidden] { display: none; }
@media (max-width: 600px) {
  header { padding: 6px 10px; }
  header h1 { font-size: 16px; }
  main { padding: 10px; }
  .msg { max-width: 96%; }
  form#composer { padding: 8px 10px; }
  #disclaimer { padding: 6px 10px; font-size: 12px; }
  #disclaimer span[lang="en"] { display: none; }
  header { flex-wrap: nowrap; }
  header button { padding: 6px 10px; }
}
`;

const SCRIPT = `
"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var messagesEl = $("messages"), input = $("input"), sendBtn = $("send"), stopBtn = $("stop");
  var statusEl = $("status"), settingsEl = $("settings");
  var history = [];
  var controller = null;
  var modelName = "";
  // The model's context (from /health) and the prompt tokens per character of what was sent
  // (learned from each answer's usage), to keep the newest turns that fit.
  var maxContext = 0;
  var tokensPerChar = 1;

  var FIELDS = ["temperature", "top_p", "max_tokens", "top_k", "repetition_penalty", "seed",
    "system"];
  var STORE = "medglm.settings";
  // The API key lives in this tab's sessionStorage; only "remember" puts it in localStorage.
  var KEY_STORE = "medglm.api_key";

  function storage(kind) {
    try { return kind === "local" ? localStorage : sessionStorage; } catch (e) { return null; }
  }
  function loadSettings() {
    var local = storage("local"), session = storage("session");
    var saved = {};
    try { saved = JSON.parse((local && local.getItem(STORE)) || "{}") || {}; } catch (e) { saved = {}; }
    FIELDS.forEach(function (name) {
      if (typeof saved[name] === "string") $("set-" + name).value = saved[name];
    });
    var remembered = local ? local.getItem(KEY_STORE) : null;
    // An earlier page kept the key with the settings in localStorage: it moves to this session.
    var key = remembered || (session && session.getItem(KEY_STORE)) ||
      (typeof saved.api_key === "string" ? saved.api_key : "");
    $("set-api_key").value = key;
    $("set-remember_key").checked = !!remembered;
    if (typeof saved.api_key === "string") saveSettings();
  }
  function saveSettings() {
    var local = storage("local"), session = storage("session");
    var values = {};
    FIELDS.forEach(function (name) { values[name] = $("set-" + name).value; });
    var key = $("set-api_key").value.trim();
    var remember = $("set-remember_key").checked;
    try {
      if (local) local.setItem(STORE, JSON.stringify(values));
      if (local) {
        if (remember && key) local.setItem(KEY_STORE, key);
        else local.removeItem(KEY_STORE);
      }
      if (session) {
        if (!remember && key) session.setItem(KEY_STORE, key);
        else session.removeItem(KEY_STORE);
      }
    } catch (e) { /* private mode */ }
  }
  function numberSetting(name, integer) {
    var raw = $("set-" + name).value.trim();
    if (raw === "") return undefined;
    var v = Number(raw);
    if (!isFinite(v) || (integer && Math.floor(v) !== v)) {
      throw new Error("设置项 " + name + " 不是有效的数字 / setting " + name + " is not a valid number");
    }
    return v;
  }
  function headers() {
    var h = { "Content-Type": "application/json" };
    var key = $("set-api_key").value.trim();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = cls || "";
  }
  function checkHealth() {
    fetch("/health").then(function (res) {
      return res.json().then(function (body) { return { ok: res.ok, body: body }; });
    }).then(function (r) {
      if (r.ok) {
        modelName = r.body.model || "";
        maxContext = Number(r.body.maxContext) || 0;
        // What runs: the backend and, where known, the weights' bits and size.
        var runs = r.body.weights ? " · " + r.body.backend + " · " + r.body.weights : "";
        setStatus(modelName + (r.body.demo ? "（演示模型 demo）" : "") + runs, "ready");
      } else if (r.body && r.body.status === "loading") {
        setStatus("模型加载中… / loading the model…", "down");
        setTimeout(checkHealth, 2000);
      } else {
        setStatus("模型不可用 / model unavailable: " + ((r.body && r.body.error) || ""), "down");
      }
    }).catch(function () {
      setStatus("无法连接服务器 / server unreachable", "down");
      setTimeout(checkHealth, 5000);
    });
  }

  function scrollToEnd() {
    var main = messagesEl.parentElement;
    main.scrollTop = main.scrollHeight;
  }
  function addMessage(role, text) {
    var empty = $("empty");
    if (empty) empty.remove();
    var el = document.createElement("div");
    el.className = "msg " + role;
    el.setAttribute("data-role", role);
    var body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    var meta = document.createElement("span");
    meta.className = "meta";
    el.appendChild(body);
    el.appendChild(meta);
    messagesEl.appendChild(el);
    scrollToEnd();
    return el;
  }
  function setBusy(busy) {
    sendBtn.hidden = busy;
    stopBtn.hidden = !busy;
    input.disabled = false;
  }

  function errorMessage(res, body) {
    var e = body && body.error;
    var text = e && e.message ? e.message : ("HTTP " + res.status);
    if (e && e.code === "context_length_exceeded") {
      text = "问题太长，超出了模型能处理的长度" + (maxContext ? "（" + maxContext + " tokens）" : "") +
        "，请缩短问题 / the question alone is too long for the model's context";
    }
    if (res.status === 401) text += "（请在设置中填写 API key / set the API key in settings）";
    if (res.status === 429) {
      var after = res.headers.get("Retry-After");
      text = "服务器繁忙，请稍后再试 / the server is busy" + (after ? "（" + after + " s）" : "");
    }
    return text;
  }

  // Characters the messages count for the estimate (each message also carries template words).
  function charCount(messages) {
    return messages.reduce(function (n, m) { return n + Array.from(m.content).length + 6; }, 0);
  }
  // The newest turns that fit: the oldest question/answer pairs go first, leaving room for an
  // answer (as the terminal chat and the bot do). convo is [q, a, q, a, …, q].
  function fitConversation(convo, system, maxTokens) {
    var head = system ? [{ role: "system", content: system }] : [];
    var dropped = 0;
    if (maxContext > 0) {
      var room = Math.min(maxTokens || 512, Math.floor(maxContext / 4));
      while (convo.length - 2 * dropped > 1 &&
        charCount(head.concat(convo.slice(2 * dropped))) * tokensPerChar > maxContext - room) {
        dropped++;
      }
    }
    return { messages: head.concat(convo.slice(2 * dropped)), dropped: dropped };
  }
  function droppedNote(n) {
    return "较早的 " + n + " 轮对话超出了模型的上下文长度，本次回答未参考 / " + n +
      " earlier turn(s) left out: they no longer fit the model's context";
  }
  function contextError(res, body) {
    return res.status === 400 && body && body.error && body.error.code === "context_length_exceeded";
  }

  async function send(question) {
    var sampling = {};
    try {
      var t = numberSetting("temperature"), p = numberSetting("top_p");
      var m = numberSetting("max_tokens", true), k = numberSetting("top_k", true);
      var rp = numberSetting("repetition_penalty"), seed = numberSetting("seed", true);
      if (t !== undefined) sampling.temperature = t;
      if (p !== undefined) sampling.top_p = p;
      if (m !== undefined) sampling.max_tokens = m;
      if (k !== undefined) sampling.top_k = k;
      if (rp !== undefined) sampling.repetition_penalty = rp;
      if (seed !== undefined) sampling.seed = seed;
    } catch (e) {
      addMessage("assistant error", "").querySelector(".meta").textContent = e.message;
      return;
    }
    saveSettings();
    // This conversation; "new chat" starts another array, so a late finish cannot leak into it.
    var convo = history;
    convo.push({ role: "user", content: question });
    addMessage("user", question);
    var bubble = addMessage("assistant", "");
    bubble.classList.add("streaming");
    var textEl = bubble.querySelector(".text"), metaEl = bubble.querySelector(".meta");
    var answer = "", finish = null, usage = null, started = performance.now(), firstAt = 0;
    var system = $("set-system").value.trim();
    var fit = fitConversation(convo, system, sampling.max_tokens);
    var own = new AbortController();
    controller = own;
    setBusy(true);
    try {
      var res;
      while (true) {
        if (fit.dropped) metaEl.textContent = droppedNote(fit.dropped);
        res = await fetch("/v1/chat/completions", {
          method: "POST",
          headers: headers(),
          body: JSON.stringify(Object.assign({
            model: modelName || undefined,
            messages: fit.messages,
            stream: true,
            stream_options: { include_usage: true },
          }, sampling)),
          signal: own.signal,
        });
        if (res.ok) break;
        var body = null;
        try { body = await res.json(); } catch (e) { body = null; }
        // The estimate was short: leave out one more old turn while any is left.
        var turns = (fit.messages.length - (system ? 1 : 0) - 1) / 2;
        if (contextError(res, body) && turns > 0) {
          var d = fit.dropped + 1;
          fit = { messages: fit.messages.slice(0, system ? 1 : 0).concat(convo.slice(2 * d)), dropped: d };
          continue;
        }
        throw new Error(errorMessage(res, body));
      }
      var reader = res.body.getReader(), decoder = new TextDecoder(), buffer = "", done = false;
      while (!done) {
        var step = await reader.read();
        if (step.done) break;
        buffer += decoder.decode(step.value, { stream: true }).replace(/\\r\\n/g, "\\n");
        var cut;
        while (!done && (cut = buffer.indexOf("\\n\\n")) >= 0) {
          var event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          var data = event.split("\\n").filter(function (l) { return l.indexOf("data:") === 0; })
            .map(function (l) { return l.slice(5).replace(/^ /, ""); }).join("\\n");
          if (data === "") continue;
          if (data === "[DONE]") { done = true; break; }
          var chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || "generation failed");
          if (chunk.usage) usage = chunk.usage;
          var choice = chunk.choices && chunk.choices[0];
          if (!choice) continue;
          if (choice.delta && choice.delta.content) {
            if (!firstAt) firstAt = performance.now();
            answer += choice.delta.content;
            textEl.textContent = answer;
            scrollToEnd();
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
      if (!done) throw new Error("连接中断 / the connection closed before the answer finished");
      var notes = [];
      if (fit.dropped) notes.push(droppedNote(fit.dropped));
      if (usage && usage.prompt_tokens > 0) {
        tokensPerChar = usage.prompt_tokens / charCount(fit.messages);
      }
      if (finish === "length") notes.push("已达到长度上限 / length limit reached");
      if (usage) notes.push(usage.completion_tokens + " tokens");
      if (firstAt) notes.push("首字 " + Math.round(firstAt - started) + " ms");
      metaEl.textContent = notes.join(" · ");
      convo.push({ role: "assistant", content: answer });
    } catch (e) {
      if (own.signal.aborted) {
        metaEl.textContent = "已停止 / stopped";
        // Keep what was said so far, so the conversation can go on from it.
        if (answer) convo.push({ role: "assistant", content: answer });
        else convo.pop();
      } else {
        bubble.classList.add("error");
        metaEl.textContent = "出错了 / error: " + e.message;
        // Drop the unanswered question, so the history stays user/assistant pairs.
        convo.pop();
        if (!answer) input.value = question;
      }
    } finally {
      bubble.classList.remove("streaming");
      if (controller === own) {
        controller = null;
        setBusy(false);
      }
    }
  }

  $("composer").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var question = input.value.trim();
    if (!question || controller) return;
    input.value = "";
    autosize();
    send(question);
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  // The height follows the text, and the placeholder when empty (it wraps on a phone).
  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, window.innerHeight * 0.3) + "px";
  }
  input.addEventListener("input", autosize);
  window.addEventListener("resize", autosize);
  stopBtn.addEventListener("click", function () { if (controller) controller.abort(); });
  $("new-chat").addEventListener("click", function () {
    if (controller) controller.abort();
    history = [];
    messagesEl.textContent = "";
    var empty = document.createElement("p");
    empty.id = "empty";
    empty.textContent = $("empty-template").textContent;
    messagesEl.appendChild(empty);
    input.focus();
  });
  $("toggle-settings").addEventListener("click", function () {
    settingsEl.hidden = !settingsEl.hidden;
    this.setAttribute("aria-expanded", String(!settingsEl.hidden));
  });
  settingsEl.addEventListener("change", saveSettings);

  loadSettings();
  checkHealth();
  autosize();
  input.focus();
})();
`;

const EMPTY_TEXT = "请描述您的症状或健康问题，例如：“最近总是失眠，应该怎么调理？”";

const BODY = `
<header>
  <h1>medglm 医疗问答</h1>
  <span id="status" role="status">连接中… / connecting…</span>
  <button type="button" id="new-chat" title="开始新对话 / new chat">新对话</button>
  <button type="button" id="toggle-settings" aria-expanded="false" aria-controls="settings"
    title="采样设置 / sampling settings">设置</button>
</header>
<p id="disclaimer" role="note"><strong>免责声明：</strong><span>本服务的回答由人工智能模型自动生成，仅供参考，\
不能替代执业医师的诊断、治疗或用药建议。如有不适请及时就医；紧急情况请立即拨打 120 或前往最近的急诊。</span>
<span lang="en">Disclaimer: answers are generated by an AI model for information only and are not
medical advice. In an emergency call your local emergency number.</span></p>
<section id="settings" hidden aria-label="设置 settings">
  <label>温度 temperature (0–2)<input id="set-temperature" type="number" min="0" max="2" step="0.05" placeholder="默认 default"></label>
  <label>top_p (0–1]<input id="set-top_p" type="number" min="0.01" max="1" step="0.05" placeholder="默认 default"></label>
  <label>最大长度 max_tokens<input id="set-max_tokens" type="number" min="1" step="1" placeholder="默认 default"></label>
  <label>top_k<input id="set-top_k" type="number" min="0" step="1" placeholder="默认 default"></label>
  <label>重复惩罚 repetition_penalty<input id="set-repetition_penalty" type="number" min="0.1" step="0.05" placeholder="默认 default"></label>
  <label>随机种子 seed<input id="set-seed" type="number" step="1" placeholder="随机 random"></label>
  <label class="wide">系统提示 system prompt<textarea id="set-system" rows="2" placeholder="可选 optional"></textarea></label>
  <label class="wide">API key<input id="set-api_key" type="password" autocomplete="off" placeholder="服务器要求时填写 only if the server needs one"></label>
  <label class="check wide"><input id="set-remember_key" type="checkbox"> 在此浏览器记住 API key（否则关闭标签页即清除）/ remember the key in this browser</label>
</section>
<main>
  <div id="messages" aria-live="polite">
    <p id="empty">${EMPTY_TEXT}</p>
  </div>
</main>
<template id="empty-template">${EMPTY_TEXT}</template>
<form id="composer" autocomplete="off">
  <textarea id="input" rows="1" placeholder="输入您的问题（Enter 发送，Shift+Enter 换行）" aria-label="问题 question"></textarea>
  <button type="submit" id="send" class="primary">发送</button>
  <button type="button" id="stop" hidden>停止</button>
</form>
`;

/** The whole page. */
export const CHAT_PAGE_HTML = `<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="light">
<title>medglm 医疗问答</title>
<style>${STYLE}</style>
</head>
<body>${BODY}<script>${SCRIPT}</script>
</body>
</html>
`;

function sha256(text: string): string {
  return `'sha256-${createHash("sha256").update(text).digest("base64")}'`;
}

/**
 * The Content-Security-Policy the page is served with: only its own inline script and style
 * (pinned by hash) and requests back to this server, so nothing outside can be loaded.
 */
export const CHAT_PAGE_SECURITY_POLICY: string = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");
