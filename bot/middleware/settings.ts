/** `/settings`: show or change the chat's answer length and temperature. */
import { Composer } from "npm:grammy@1.46.0/web";
import { type BotServices, inTurn, type MedContext } from "../context.ts";
import { applySettingsCommand } from "../settings_command.ts";

export function settings(svc: BotServices): Composer<MedContext> {
  const c = new Composer<MedContext>();
  c.command("settings", (ctx) =>
    inTurn(ctx, async () => {
      const store = await svc.store();
      const current = await store.settings(ctx.chat.id);
      const [reply, updated] = applySettingsCommand(current, ctx.match, svc.lengths);
      if (updated) await store.saveSettings(ctx.chat.id, updated);
      await svc.say(ctx, reply);
    }));
  return c;
}
