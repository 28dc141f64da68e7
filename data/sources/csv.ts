/**
 * Delimited text (CSV / TSV) with RFC 4180 quoting: quoted fields may hold the delimiter, doubled
 * quotes and newlines, which is exactly where a naive `split(",")` breaks the medical dialogue CSV.
 */

export interface DelimitedRow {
  fields: string[];
  /** 1-based line on which the row starts. */
  line: number;
}

/** Parses `text` into rows; blank lines are skipped. A CR before LF is dropped. */
export function parseDelimited(text: string, delimiter: string): DelimitedRow[] {
  const rows: DelimitedRow[] = [];
  const d = delimiter.charCodeAt(0);
  const n = text.length;
  let i = 0;
  let line = 1;
  while (i < n) {
    const startLine = line;
    const fields: string[] = [];
    let field = "";
    let rowDone = false;
    while (!rowDone) {
      if (text.charCodeAt(i) === 0x22) {
        // quoted field
        i++;
        let buf = "";
        for (;;) {
          const q = text.indexOf('"', i);
          if (q === -1) {
            buf += text.slice(i);
            i = n;
            break;
          }
          buf += text.slice(i, q);
          if (text.charCodeAt(q + 1) === 0x22) {
            buf += '"';
            i = q + 2;
          } else {
            i = q + 1;
            break;
          }
        }
        for (let k = 0; k < buf.length; k++) if (buf.charCodeAt(k) === 0x0a) line++;
        field = buf;
        // anything between the closing quote and the delimiter is kept verbatim
        while (i < n) {
          const c = text.charCodeAt(i);
          if (c === d || c === 0x0a || c === 0x0d) break;
          field += text[i++];
        }
      } else {
        let j = i;
        while (j < n) {
          const c = text.charCodeAt(j);
          if (c === d || c === 0x0a || c === 0x0d) break;
          j++;
        }
        field = text.slice(i, j);
        i = j;
      }
      fields.push(field);
      field = "";
      const c = text.charCodeAt(i);
      if (c === d) i++;
      else {
        if (c === 0x0d) i++;
        if (text.charCodeAt(i) === 0x0a) i++;
        line++;
        rowDone = true;
      }
      if (i >= n && c === d) {
        fields.push("");
        rowDone = true;
      }
    }
    if (!(fields.length === 1 && fields[0] === "")) rows.push({ fields, line: startLine });
  }
  return rows;
}
