/**
 * The `X-Matrix` request authentication of the server-server API (Authentication > Request
 * Authentication): the JSON object a server signs for each request, and the `Authorization`
 * header that carries the signature.
 *
 * Header grammar (RFC 9110 section 11.4 as the spec summarises it): the scheme `X-Matrix`, one or
 * more spaces, then comma-separated `name=value` parameters with optional spaces and tabs around
 * the commas. Names are case-insensitive. A value is a token or a quoted string whose backslash
 * escapes are undone; for older servers a colon is accepted in an unquoted value. Unknown
 * parameters are ignored.
 */
import type { JsonValue } from './json.ts';

export interface XMatrixAuthorization {
  origin: string;
  /** Absent in headers from servers older than Matrix 1.3. */
  destination?: string;
  /** The key ID, e.g. `ed25519:a_1`. */
  key: string;
  /** The unpadded base64 signature. */
  sig: string;
}

export type XMatrixParseResult = { ok: true; auth: XMatrixAuthorization } | { ok: false; reason: string };

const SCHEME = /^X-Matrix[ ]+/i;
/** RFC 9110 tchar, plus the colon older servers send unquoted. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z:]+/;
const NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/;
const OWS = /^[ \t]*/;

/** Parses an `Authorization` header value of the X-Matrix scheme. Never throws. */
export function parseXMatrixHeader(header: string): XMatrixParseResult {
  const scheme = SCHEME.exec(header);
  if (!scheme) return { ok: false, reason: 'the Authorization header is not of the X-Matrix scheme' };
  let rest = header.slice(scheme[0].length);
  const params = new Map<string, string>();
  for (;;) {
    const name = NAME.exec(rest);
    if (!name) return { ok: false, reason: 'expected a parameter name' };
    rest = rest.slice(name[0].length);
    if (!rest.startsWith('=')) return { ok: false, reason: `parameter ${name[0]} has no value` };
    rest = rest.slice(1);
    let value: string;
    if (rest.startsWith('"')) {
      const quoted = readQuoted(rest);
      if (!quoted) return { ok: false, reason: `parameter ${name[0]} has an unterminated quoted value` };
      value = quoted.value;
      rest = rest.slice(quoted.length);
    } else {
      const token = TOKEN.exec(rest);
      if (!token) return { ok: false, reason: `parameter ${name[0]} has an empty or invalid value` };
      value = token[0];
      rest = rest.slice(token[0].length);
    }
    const key = name[0].toLowerCase();
    if (params.has(key)) return { ok: false, reason: `parameter ${key} appears twice` };
    params.set(key, value);
    rest = rest.slice(OWS.exec(rest)![0].length);
    if (rest === '') break;
    if (!rest.startsWith(',')) return { ok: false, reason: 'parameters must be separated by commas' };
    rest = rest.slice(1);
    rest = rest.slice(OWS.exec(rest)![0].length);
  }
  const origin = params.get('origin');
  const key = params.get('key');
  const sig = params.get('sig');
  if (origin === undefined || origin === '') return { ok: false, reason: 'the origin parameter is missing' };
  if (key === undefined || key === '') return { ok: false, reason: 'the key parameter is missing' };
  if (sig === undefined || sig === '') return { ok: false, reason: 'the sig parameter is missing' };
  const destination = params.get('destination');
  return {
    ok: true,
    auth: { origin, key, sig, ...(destination !== undefined ? { destination } : {}) },
  };
}

/** A quoted-string at the start of `text`: its unescaped value and its length in `text`. */
function readQuoted(text: string): { value: string; length: number } | null {
  let value = '';
  for (let i = 1; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') return { value, length: i + 1 };
    if (c === '\\') {
      i++;
      if (i >= text.length) return null;
      value += text[i];
    } else {
      // qdtext: HTAB, SP and visible characters other than `"` and `\` (obs-text included).
      const code = c.charCodeAt(0);
      if (code < 0x20 && c !== '\t') return null;
      if (code === 0x7f) return null;
      value += c;
    }
  }
  return null;
}

/**
 * Formats the header the way the spec asks senders to, for older receivers: one space after the
 * scheme, lower-case names, every value quoted, no spaces around commas. Values holding a quote
 * or backslash are escaped (server names, key IDs and base64 never do).
 */
export function formatXMatrixHeader(auth: XMatrixAuthorization & { destination: string }): string {
  const quote = (v: string) => `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
  return (
    `X-Matrix origin=${quote(auth.origin)},destination=${quote(auth.destination)},` +
    `key=${quote(auth.key)},sig=${quote(auth.sig)}`
  );
}

export interface SignedRequestParts {
  method: string;
  /** The request target from `/_matrix/...` on, with `?` and the query string if there is one. */
  uri: string;
  origin: string;
  destination: string;
  /** The JSON-parsed request body; undefined when the request has none. */
  content?: JsonValue;
}

/** The JSON object whose signature authenticates a request (step 1 of Request Authentication). */
export function requestSigningObject(parts: SignedRequestParts): Record<string, JsonValue> {
  const object: Record<string, JsonValue> = {
    method: parts.method.toUpperCase(),
    uri: parts.uri,
    origin: parts.origin,
    destination: parts.destination,
  };
  if (parts.content !== undefined) object.content = parts.content;
  return object;
}
