/**
 * The reference deployment, started locally and driven by a scripted conversation:
 * N model servers (`deno task serve`, the demo model), M bot replicas (`deno task bot` in webhook
 * mode, `--endpoint` naming every server, `--store` one PostgreSQL), a small round-robin load
 * balancer in front of the replicas, and the fake Bot API (tests/helpers/fake_telegram.ts) in place
 * of Telegram. This script plays Telegram's part: it delivers each user's questions to the load
 * balancer and re-delivers any update that is not acknowledged with 200, as Telegram does.
 * With `--kill` it kills one bot replica and one model server (SIGKILL) while answers are being
 * written. At the end it counts, per question, the bot messages that reply to it: answered (one),
 * lost (none), duplicated (more than one); and failed (the answer is the bot's error text).
 *
 *   deno run --allow-all scripts/cluster_demo.ts [--servers 2] [--replicas 3] [--chats 6]
 *     [--questions 4] [--kill] [--store postgres://...]
 */
import { parseArgs } from "node:util";
import postgres from "npm:postgres@3.4.10";
import { intFlag } from "../base/flags.ts";
import { SECRET_HEADER } from "../bot/webhook.ts";
import { FAILED_TEXT } from "../bot/texts.ts";
import { startFakeTelegram } from "../tests/helpers/fake_telegram.ts";
import { startPostgres, type TestPostgres } from "../tests/helpers/postgres.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    servers: { type: "string" },
    replicas: { type: "string" },
    chats: { type: "string" },
    questions: { type: "string" },
    kill: { type: "boolean" },
    "keep-logs": { type: "boolean" },
    store: { type: "string" },
  },
});
const servers = intFlag("servers", v.servers, 1, 8) ?? 2;
const replicas = intFlag("replicas", v.replicas, 1, 8) ?? 3;
const chats = intFlag("chats", v.chats, 1, 100) ?? 6;
const perChat = intFlag("questions", v.questions, 1, 50) ?? 4;
const SECRET = "cluster_demo_secret";
const QUESTIONS = [
  "感冒发烧怎么办？",
  "高血压患者饮食要注意什么？",
  "经常失眠有什么办法？",
  "胃痛可以吃什么药？",
  "孩子咳嗽一周了需要去医院吗？",
  "糖尿病的早期症状有哪些？",
];

const root = new URL("..", import.meta.url).pathname;
const children: { name: string; proc: Deno.ChildProcess; logged: Promise<unknown> }[] = [];
const say = (msg: string) => console.log(`[cluster-demo] ${msg}`);

/** Runs a task's command directly (`deno task` would put a shell between us and the process). */
function spawn(name: string, args: string[], env: Record<string, string> = {}) {
  const open = () => Deno.openSync(`${logDir}/${name}.log`, { append: true, create: true });
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", ...args],
    cwd: root,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const logged = Promise.all([
    proc.stdout.pipeTo(open().writable).catch(() => {}),
    proc.stderr.pipeTo(open().writable).catch(() => {}),
  ]);
  children.push({ name, proc, logged });
  return proc;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (logs in ${logDir})`);
}

const logDir = await Deno.makeTempDir({ prefix: "medglm-cluster-" });
let pg: TestPostgres | undefined;
const fake = startFakeTelegram();
let balancer: Deno.HttpServer | undefined;

async function main() {
  try {
    // --- PostgreSQL ---
    let store = v.store;
    if (!store) {
      const started = await startPostgres();
      if (!started.ok) throw new Error(`cannot start PostgreSQL: ${started.reason}`);
      pg = started.pg;
      store = pg.url;
    }
    say(`PostgreSQL at ${store.replace(/:[^:@/]*@/, ":***@")}`);

    // --- model servers ---
    const serverUrls: string[] = [];
    for (let i = 0; i < servers; i++) {
      const port = freePort();
      // = deno task serve --port PORT (the demo model)
      spawn(`serve-${i + 1}`, ["serve/cli.ts", "--port", String(port)]);
      serverUrls.push(`http://127.0.0.1:${port}`);
    }
    for (const url of serverUrls) {
      await waitUntil(`${url}/health`, async () => (await fetch(`${url}/health`)).ok);
    }
    say(`${servers} model servers ready: ${serverUrls.join(", ")}`);

    // --- bot replicas ---
    const replicaPorts: number[] = [];
    for (let i = 0; i < replicas; i++) {
      const port = freePort();
      replicaPorts.push(port);
      // = deno task bot ...
      spawn(`bot-${i + 1}`, [
        "bot/cli.ts",
        "--endpoint",
        serverUrls.join(","),
        "--store",
        store,
        "--replica-id",
        `bot-${i + 1}`,
        "--claim-ttl",
        "3000",
        "--api-root",
        fake.apiRoot,
        "--webhook-url",
        "https://bot.example.org/telegram",
        "--webhook-port",
        String(port),
        "--webhook-host",
        "127.0.0.1",
        // The demo model's context is 256 tokens.
        "--max-context",
        "256",
        "--length",
        "short",
        "--history-tokens",
        "60",
        "--group-edit-interval",
        "1000",
      ], { TELEGRAM_BOT_TOKEN: fake.token, TELEGRAM_WEBHOOK_SECRET: SECRET });
    }
    await waitUntil("the bot replicas", async () => {
      const up = await Promise.all(replicaPorts.map(async (p) => {
        try {
          const res = await fetch(`http://127.0.0.1:${p}/`);
          await res.body?.cancel();
          return true;
        } catch {
          return false;
        }
      }));
      return up.every(Boolean);
    });
    say(`${replicas} bot replicas ready (webhook mode, one store)`);

    // --- the load balancer: round robin with a passive health check (a replica whose request
    // failed is left out for 5 s), as nginx's max_fails/fail_timeout does ---
    let turn = 0;
    const failedUntil = new Map<number, number>();
    balancer = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
      const body = await req.arrayBuffer();
      for (let tries = 0; tries < replicaPorts.length; tries++) {
        const port = replicaPorts[turn++ % replicaPorts.length];
        if ((failedUntil.get(port) ?? 0) > Date.now()) continue;
        try {
          const res = await fetch(`http://127.0.0.1:${port}/telegram`, {
            method: "POST",
            headers: req.headers,
            body,
          });
          return new Response(await res.arrayBuffer(), { status: res.status });
        } catch {
          // Died before or while answering: the sender re-delivers (we cannot know which).
          failedUntil.set(port, Date.now() + 5000);
          return new Response("bad gateway", { status: 502 });
        }
      }
      return new Response("no replica", { status: 503 });
    });
    const lbUrl = `http://127.0.0.1:${(balancer.addr as Deno.NetAddr).port}/telegram`;
    say(`load balancer at ${lbUrl}`);

    // --- Telegram's part: deliver updates, re-deliver the unacknowledged ---
    let deliveries = 0;
    let redeliveries = 0;
    let updateId = 1;
    const asked: { chatId: number; messageId: number }[] = [];
    const deliver = async (update: unknown) => {
      for (let attempt = 0;; attempt++) {
        deliveries++;
        if (attempt > 0) redeliveries++;
        try {
          const res = await fetch(lbUrl, {
            method: "POST",
            headers: { "content-type": "application/json", [SECRET_HEADER]: SECRET },
            body: JSON.stringify(update),
          });
          await res.body?.cancel();
          if (res.ok) return;
        } catch { /* as a failed delivery */ }
        await new Promise((r) => setTimeout(r, 500 * Math.min(8, 2 ** attempt)));
      }
    };
    const conversation = async (c: number) => {
      const chatId = -1000 - c;
      for (let q = 0; q < perChat; q++) {
        const text = `@${fake.botUser.username} ${QUESTIONS[(c + q) % QUESTIONS.length]}`;
        const message = fake.sendText({ chatId, text, chatType: "group", userId: 500 + c });
        asked.push({ chatId, messageId: message.message_id });
        await deliver({ update_id: updateId++, message });
      }
    };

    const answeredSoFar = () => {
      let n = 0;
      for (const q of asked) {
        const done = fake.calls.some((c) =>
          c.method === "sendMessage" && c.response.ok && Number(c.params.chat_id) === q.chatId &&
          (c.params.reply_parameters as { message_id?: number } | undefined)?.message_id ===
            q.messageId
        );
        if (done) n++;
      }
      return n;
    };

    const t0 = performance.now();
    const total = chats * perChat;
    const running = Promise.all(Array.from({ length: chats }, (_, c) => conversation(c)));
    if (v.kill) {
      // Kill while answers are being written: once a third of the questions are answered.
      await waitUntil("answers", () => Promise.resolve(answeredSoFar() >= total / 3), 600_000);
      const victim = children.find((c) => c.name === "bot-1")!;
      victim.proc.kill("SIGKILL");
      say("killed bot replica bot-1 (SIGKILL)");
      const server = children.find((c) => c.name === "serve-1")!;
      server.proc.kill("SIGKILL");
      say(`killed model server serve-1 (SIGKILL)`);
    }
    await running;
    const seconds = (performance.now() - t0) / 1000;

    // --- the count ---
    const replies = new Map<string, { id: number; failed: boolean }[]>();
    for (const call of fake.callsOf("sendMessage")) {
      if (!call.response.ok) continue;
      const rp = call.params.reply_parameters as { message_id?: number } | undefined;
      const chatId = Number(call.params.chat_id);
      const key = `${chatId}/${rp?.message_id}`;
      const sent = (call.response as { result: { message_id: number } }).result;
      const entry = fake.chat(chatId).find((e) => e.message.message_id === sent.message_id);
      const list = replies.get(key) ?? [];
      list.push({ id: sent.message_id, failed: entry?.message.text === FAILED_TEXT });
      replies.set(key, list);
    }
    let answered = 0, lost = 0, duplicated = 0, failed = 0;
    for (const q of asked) {
      const got = replies.get(`${q.chatId}/${q.messageId}`) ?? [];
      if (got.length === 0) lost++;
      else if (got.length > 1) duplicated++;
      else if (got[0].failed) failed++;
      else answered++;
    }
    // What the store says: every update handled (done) exactly once.
    const db = postgres(store, { onnotice: () => {} });
    const [row] = await db`SELECT count(*) FILTER (WHERE state = 'done')::int AS done,
    count(*)::int AS all FROM bot_updates`;
    await db.end();
    console.log(
      `\ncluster: ${servers} model servers, ${replicas} bot replicas, 1 PostgreSQL, 1 load balancer` +
        (v.kill ? "; killed 1 bot replica and 1 model server mid-run" : ""),
    );
    console.log(
      `questions ${total}: answered ${answered}, lost ${lost}, duplicated ${duplicated}, ` +
        `failed ${failed}`,
    );
    console.log(
      `updates done in the store ${row.done} of ${row.all}; deliveries ${deliveries} ` +
        `(re-deliveries ${redeliveries}); ${seconds.toFixed(1)} s`,
    );
    if (lost || duplicated || failed || row.done !== total) Deno.exitCode = 1;
  } catch (err) {
    console.error(`[cluster-demo] error: ${(err as Error).message}`);
    Deno.exitCode = 1;
  } finally {
    for (const c of children) {
      try {
        c.proc.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    await Promise.all(children.map((c) => c.proc.status));
    await Promise.all(children.map((c) => c.logged));
    if (children.some((c) => c.name.startsWith("bot-"))) await reportFailovers();
    await balancer?.shutdown();
    await fake.close();
    await pg?.stop();
    // The processes' logs are kept only when something went wrong.
    if (Deno.exitCode === 0 && !v["keep-logs"]) await Deno.remove(logDir, { recursive: true });
    else console.error(`[cluster-demo] the logs of every process are in ${logDir}`);
  }
}

/** What the replicas did about failing model servers, from their logs (complete once they exit). */
async function reportFailovers() {
  let moved = 0, rewritten = 0;
  for (let i = 0; i < replicas; i++) {
    const text = await Deno.readTextFile(`${logDir}/bot-${i + 1}.log`).catch(() => "");
    moved += text.match(/moving the question to another server/g)?.length ?? 0;
    rewritten += text.match(/answering again on another server/g)?.length ?? 0;
  }
  console.log(
    `questions moved to another server before their first token ${moved}; ` +
      `answers broken off mid-stream and written again from another server ${rewritten}`,
  );
}

await main();
