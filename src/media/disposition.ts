/**
 * What a media answer says about its bytes so that a browser never runs them in the server's
 * origin: a sandboxing Content-Security-Policy, nosniff, and a Content-Disposition that is
 * `inline` only for types a browser shows without running anything (spec v1.12's list of types
 * safe to show inline). Uploaded HTML or SVG is served as an attachment.
 */

const INLINE_TYPES = new Set([
  'text/css',
  'text/plain',
  'text/csv',
  'application/json',
  'application/ld+json',
  'image/jpeg',
  'image/gif',
  'image/png',
  'image/apng',
  'image/webp',
  'image/avif',
  'video/mp4',
  'video/webm',
  'video/ogg',
  'video/quicktime',
  'audio/mp4',
  'audio/webm',
  'audio/aac',
  'audio/mpeg',
  'audio/ogg',
  'audio/wave',
  'audio/wav',
  'audio/x-wav',
  'audio/x-pn-wav',
  'audio/flac',
  'audio/x-flac',
]);

/** The media type without parameters, lower-cased: `Text/HTML; charset=x` -> `text/html`. */
export function essence(contentType: string | null | undefined): string {
  return (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
}

export function isInlineSafe(contentType: string | null | undefined): boolean {
  return INLINE_TYPES.has(essence(contentType));
}

/** A media type as a client declared it, or application/octet-stream when it is missing or malformed. */
export function storedContentType(declared: string | undefined): string {
  const value = (declared ?? '').trim();
  if (value === '' || value.length > 255) return 'application/octet-stream';
  if (!/^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+(\s*;.*)?$/.test(value))
    return 'application/octet-stream';
  // Parameters with control characters would break the header.
  if (hasControlCharacter(value)) return 'application/octet-stream';
  return value;
}

/**
 * `inline` or `attachment`, with the file name as RFC 6266 asks: an ASCII `filename` fallback
 * (quoted, characters outside printable ASCII and `"` `\` `%` replaced by `_`) and, when the
 * name needs it, `filename*=UTF-8''<percent-encoded>` (RFC 8187).
 */
export function contentDisposition(contentType: string | null | undefined, fileName: string | null): string {
  const kind = isInlineSafe(contentType) ? 'inline' : 'attachment';
  if (fileName === null || fileName === '') return kind;
  const fallback = fileName.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  let header = `${kind}; filename="${fallback}"`;
  if (fallback !== fileName) header += `; filename*=UTF-8''${encodeRfc8187(fileName)}`;
  return header;
}

function encodeRfc8187(value: string): string {
  return encodeURIComponent(value).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** Headers every media answer carries, whatever its type. */
export const MEDIA_SECURITY_HEADERS = {
  'content-security-policy':
    "sandbox; default-src 'none'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; style-src 'unsafe-inline'; img-src 'self' data:; media-src 'self'",
  'x-content-type-options': 'nosniff',
  // Clients on other origins (web clients) display media in <img>, so the resource may be read
  // cross-origin; the sandbox above keeps it from running.
  'cross-origin-resource-policy': 'cross-origin',
};

/** Whether the text holds a C0 control character or DEL. */
export function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/**
 * The file name a Content-Disposition header gives (another server's answer): `filename*` in
 * RFC 8187's `UTF-8''<percent-encoded>` form when present and decodable, else `filename`
 * (quoted or a bare token); undefined when there is none.
 */
export function fileNameOfDisposition(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  let plain: string | undefined;
  let extended: string | undefined;
  // Parameters after the disposition type: name=token or name="quoted string".
  const re = /;\s*([A-Za-z0-9!#$&+.^_`|~-]+\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))/g;
  for (const m of header.matchAll(re)) {
    const name = m[1]!.toLowerCase();
    const value = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
    if (name === 'filename' && plain === undefined) plain = value;
    else if (name === 'filename*' && extended === undefined) {
      const ext = /^utf-8'[^']*'(.*)$/i.exec(value);
      if (ext) {
        try {
          extended = decodeURIComponent(ext[1]!);
        } catch {
          // Not valid percent-encoded UTF-8: fall back to `filename`.
        }
      }
    }
  }
  return extended ?? plain;
}
