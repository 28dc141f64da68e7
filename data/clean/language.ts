/**
 * Language tag of a record for the zh/en share and the optional language filter. Han characters
 * carry about as much as a word, so a text counts as Chinese once its Han characters are at least
 * a quarter of its Latin letters; text with neither (arithmetic, symbols) is `other`.
 */

export type Language = "zh" | "en" | "other";

export function languageOf(text: string): Language {
  let han = 0, latin = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) {
      if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) latin++;
    } else if (
      (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0xf900 && c <= 0xfaff)
    ) han++;
  }
  if (han > 0 && han * 4 >= latin) return "zh";
  if (latin > 0) return "en";
  return "other";
}
