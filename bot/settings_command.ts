/** The `/settings` command and the checks on settings. */
import { ANSWER_LENGTHS, type AnswerLength, type ChatSettings } from "./store.ts";
import * as texts from "./texts.ts";

export function checkSettings(s: ChatSettings): void {
  if (!(s.length in ANSWER_LENGTHS)) {
    throw new Error(`answer length must be short, medium or long, got ${s.length}`);
  }
  if (!(s.temperature >= 0 && s.temperature <= 2)) {
    throw new Error(`temperature must be between 0 and 2, got ${s.temperature}`);
  }
}

/** `/settings`, `/settings length long`, `/settings temperature 0.3` → reply and new settings. */
export function applySettingsCommand(
  current: ChatSettings,
  args: string,
  lengths: Record<AnswerLength, number> = ANSWER_LENGTHS,
): [string, ChatSettings | undefined] {
  const show = (s: ChatSettings) => texts.settingsText(s, lengths[s.length]);
  const words = args.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return [show(current), undefined];
  const [key, value] = [words[0].toLowerCase(), words[1]?.toLowerCase()];
  if (key === "length" || key === "len" || key === "长度") {
    if (value === "short" || value === "medium" || value === "long") {
      const next = { ...current, length: value as AnswerLength };
      return [show(next), next];
    }
    return ["length: short | medium | long", undefined];
  }
  if (key === "temperature" || key === "temp" || key === "温度") {
    const t = Number(value);
    if (value !== undefined && Number.isFinite(t) && t >= 0 && t <= 2) {
      const next = { ...current, temperature: Math.round(t * 100) / 100 };
      return [show(next), next];
    }
    return ["temperature: a number from 0 to 2 (0 = deterministic)", undefined];
  }
  return [texts.HELP_TEXT, undefined];
}
