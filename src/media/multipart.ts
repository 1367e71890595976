/**
 * A reader of `multipart/mixed` bodies (RFC 2046 section 5.1), as other servers answer
 * GET /_matrix/federation/v1/media/download and /thumbnail: the body is already in memory (the
 * federation transport reads answers whole, up to a size limit), so the parts are slices of it.
 * Anything that does not follow the grammar is refused with a MultipartError rather than guessed.
 */

export interface MultipartPart {
  /** Header names lower-cased; a repeated header keeps its first value. */
  headers: Record<string, string>;
  body: Buffer;
}

export class MultipartError extends Error {
  override name = 'MultipartError';
}

const CRLF = Buffer.from('\r\n');
const MAX_PARTS = 8;
const MAX_HEADER_BYTES = 16 * 1024;

/** The boundary parameter of a multipart Content-Type; undefined when it is not multipart/mixed. */
export function mixedBoundary(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const [type, ...params] = contentType.split(';');
  if (type!.trim().toLowerCase() !== 'multipart/mixed') return undefined;
  for (const param of params) {
    const m = /^\s*boundary\s*=\s*(?:"([^"]*)"|([^\s"]+))\s*$/i.exec(param);
    if (!m) continue;
    const boundary = m[1] ?? m[2]!;
    // RFC 2046: 1 to 70 characters of a restricted set, not ending in a space.
    if (!/^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/.test(boundary)) return undefined;
    return boundary;
  }
  return undefined;
}

/** The parts of a multipart body delimited by `boundary`; the preamble and epilogue are ignored. */
export function parseMultipart(body: Buffer, boundary: string): MultipartPart[] {
  const dash = Buffer.from(`--${boundary}`);
  // The first delimiter may open the body; every later one follows a CRLF.
  let at: number;
  if (body.subarray(0, dash.length).equals(dash)) at = 0;
  else {
    const first = body.indexOf(Buffer.concat([CRLF, dash]));
    if (first < 0) throw new MultipartError('no boundary in the body');
    at = first + CRLF.length;
  }
  const delimiter = Buffer.concat([CRLF, dash]);
  const parts: MultipartPart[] = [];
  let line = delimiterLine(body, at + dash.length);
  if (line === undefined) throw new MultipartError('malformed delimiter line');
  for (;;) {
    if (line.close) return parts;
    const start = line.next;
    // The next delimiter: CRLF, "--boundary", then padding and CRLF or "--". Bytes that merely
    // begin like one (the boundary followed by something else) belong to the part.
    let next = body.indexOf(delimiter, start);
    let found: { close: boolean; next: number } | undefined;
    while (next >= 0) {
      found = delimiterLine(body, next + delimiter.length);
      if (found) break;
      next = body.indexOf(delimiter, next + 1);
    }
    if (next < 0 || !found) throw new MultipartError('no closing boundary');
    if (parts.length >= MAX_PARTS) throw new MultipartError('too many parts');
    parts.push(parsePart(body.subarray(start, next)));
    line = found;
  }
}

/**
 * What follows "--boundary" at `pos`: `--` (the close delimiter), or transport padding (spaces
 * and tabs) and CRLF, the part starting after it; undefined when neither.
 */
function delimiterLine(body: Buffer, pos: number): { close: boolean; next: number } | undefined {
  if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return { close: true, next: pos + 2 };
  let p = pos;
  while (body[p] === 0x20 || body[p] === 0x09) p++;
  if (body[p] === 0x0d && body[p + 1] === 0x0a) return { close: false, next: p + 2 };
  return undefined;
}

function parsePart(raw: Buffer): MultipartPart {
  // A part with no headers starts with its blank line.
  let headerEnd: number;
  let bodyStart: number;
  if (raw[0] === 0x0d && raw[1] === 0x0a) {
    headerEnd = 0;
    bodyStart = 2;
  } else {
    const blank = raw.indexOf('\r\n\r\n');
    if (blank < 0) throw new MultipartError('a part without the blank line after its headers');
    headerEnd = blank;
    bodyStart = blank + 4;
  }
  if (headerEnd > MAX_HEADER_BYTES) throw new MultipartError('part headers too long');
  const headers: Record<string, string> = {};
  if (headerEnd > 0) {
    for (const line of headerText(raw.subarray(0, headerEnd)).split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw new MultipartError('a malformed part header');
      const name = line.slice(0, colon).trim().toLowerCase();
      if (!(name in headers)) headers[name] = line.slice(colon + 1).trim();
    }
  }
  return { headers, body: raw.subarray(bodyStart) };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Header bytes as text: UTF-8 when they are valid UTF-8 (some servers send names so), else Latin-1. */
function headerText(bytes: Buffer): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return bytes.toString('latin1');
  }
}
