/**
 * Webhook mode: a Hono app that takes Telegram's POSTs, checks the secret-token header that
 * Telegram sends with every update, and answers once the bot is done with the update: 200 when it
 * is handled (or was already), 503 when it must come again (this replica is stopping, or another
 * one holds it too long), so that Telegram re-delivers it, to this replica or another.
 * Duplicates are recognized by the bot's store, not here: they may come to another replica.
 */
import { Hono } from "npm:hono@4.13.19";
import type { Update } from "npm:grammy@1.46.0/types";

export const SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token";

export interface WebhookAppOptions {
  /** Path Telegram posts to, e.g. "/telegram". */
  path: string;
  secret: string;
  onUpdate: (update: Update) => Promise<"handled" | "duplicate" | "redeliver">;
  log: (level: "info" | "warn" | "error", msg: string) => void;
}

/** Telegram allows 1-256 characters A-Z, a-z, 0-9, `_` and `-` in a secret token. */
export function checkSecretToken(secret: string): void {
  if (!/^[A-Za-z0-9_-]{1,256}$/.test(secret)) {
    throw new Error(
      "webhook secret must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)",
    );
  }
}

function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  // Compare in time independent of where the first difference is.
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

export function createWebhookApp(opts: WebhookAppOptions): Hono {
  checkSecretToken(opts.secret);
  const app = new Hono();
  app.post(opts.path, async (c) => {
    if (!sameSecret(c.req.header(SECRET_HEADER) ?? "", opts.secret)) {
      return c.json({ ok: false, error: "wrong or missing secret token" }, 401);
    }
    let update: Update;
    try {
      update = await c.req.json();
    } catch {
      return c.json({ ok: false, error: "body is not JSON" }, 400);
    }
    if (typeof update !== "object" || update === null || typeof update.update_id !== "number") {
      return c.json({ ok: false, error: "not a Telegram update: update_id missing" }, 400);
    }
    let outcome;
    try {
      outcome = await opts.onUpdate(update);
    } catch (err) {
      opts.log("error", `update ${update.update_id} failed: ${String(err)}`);
      outcome = "redeliver";
    }
    if (outcome === "redeliver") {
      return c.json({ ok: false, error: "not handled now; deliver it again" }, 503);
    }
    return c.json({ ok: true });
  });
  return app;
}
