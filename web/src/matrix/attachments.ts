/**
 * Attachments: the pure part of sending and showing files. Encryption of attachments as the
 * client-server spec describes it for encrypted rooms (AES-CTR with a fresh 256-bit key per file,
 * the SHA-256 of the ciphertext, the key as a JSON Web Key, protocol v2), with WebCrypto; the
 * message content of m.image and m.file; and reading that content back, defensively, since it
 * comes from other clients.
 */

/** The `file` object of an encrypted attachment (EncryptedFile in the spec). */
export interface EncryptedFile {
  url: string;
  key: { kty: 'oct'; key_ops: string[]; alg: 'A256CTR'; k: string; ext: true };
  iv: string;
  hashes: { sha256: string };
  v: 'v2';
}

// Base64 as Matrix writes it: unpadded standard alphabet (iv, hashes) and URL-safe (the JWK's k).

export function encodeBase64(bytes: Uint8Array, urlSafe = false): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  const s = btoa(binary).replace(/=+$/, '');
  return urlSafe ? s.replace(/\+/g, '-').replace(/\//g, '_') : s;
}

/** Reads either alphabet, padded or not; null when it is not base64. */
export function decodeBase64(text: string): Uint8Array<ArrayBuffer> | null {
  const s = text.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
  if (!/^[A-Za-z0-9+/]*$/.test(s) || s.length % 4 === 1) return null;
  const binary = atob(s + '='.repeat((4 - (s.length % 4)) % 4));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/**
 * Encrypts a file's bytes for an encrypted room. The IV is 64 random bits followed by a 64-bit
 * block counter that starts at zero, so no implementation's counter can wrap within a file; the
 * key is used for this one file only. Returns the ciphertext to upload and the `file` object
 * without its `url` (known once the upload is done).
 */
export async function encryptAttachment(
  plaintext: ArrayBuffer,
): Promise<{ data: ArrayBuffer; file: Omit<EncryptedFile, 'url'> }> {
  const subtle = globalThis.crypto.subtle;
  const iv = new Uint8Array(16);
  globalThis.crypto.getRandomValues(iv.subarray(0, 8));
  const key = await subtle.generateKey({ name: 'AES-CTR', length: 256 }, true, ['encrypt', 'decrypt']);
  const data = await subtle.encrypt({ name: 'AES-CTR', counter: iv, length: 64 }, key, plaintext);
  const raw = new Uint8Array(await subtle.exportKey('raw', key));
  const hash = new Uint8Array(await subtle.digest('SHA-256', data));
  return {
    data,
    file: {
      key: {
        kty: 'oct',
        key_ops: ['encrypt', 'decrypt'],
        alg: 'A256CTR',
        k: encodeBase64(raw, true),
        ext: true,
      },
      iv: encodeBase64(iv),
      hashes: { sha256: encodeBase64(hash) },
      v: 'v2',
    },
  };
}

export class AttachmentError extends Error {
  constructor(readonly reason: 'bad-hash' | 'bad-file') {
    super(reason);
  }
}

/**
 * Checks the ciphertext against the SHA-256 the sender gave (before anything else: a server
 * that changed the file is caught here), then decrypts it. Throws AttachmentError('bad-hash')
 * when the bytes are not the ones that were sent, 'bad-file' when the `file` object is unusable.
 */
export async function decryptAttachment(ciphertext: ArrayBuffer, file: EncryptedFile): Promise<ArrayBuffer> {
  const subtle = globalThis.crypto.subtle;
  const key = decodeBase64(file.key.k);
  const iv = decodeBase64(file.iv);
  const expected = decodeBase64(file.hashes.sha256);
  if (file.v !== 'v2' || !key || key.length !== 32 || !iv || iv.length !== 16 || !expected) {
    throw new AttachmentError('bad-file');
  }
  const actual = new Uint8Array(await subtle.digest('SHA-256', ciphertext));
  if (actual.length !== expected.length || actual.some((b, i) => b !== expected[i])) {
    throw new AttachmentError('bad-hash');
  }
  const cryptoKey = await subtle.importKey('raw', key, { name: 'AES-CTR' }, false, ['decrypt']);
  // A 64-bit counter, as senders start it at zero in the IV's second half (see encryptAttachment).
  return subtle.decrypt({ name: 'AES-CTR', counter: iv, length: 64 }, cryptoKey, ciphertext);
}

// Content URIs

const MXC = /^mxc:\/\/([A-Za-z0-9.:[\]-]+)\/([A-Za-z0-9_-]+)$/;

/** The server name and media ID of an mxc:// URI, or null when it is not one. */
export function parseMxc(uri: unknown): { serverName: string; mediaId: string } | null {
  if (typeof uri !== 'string') return null;
  const m = MXC.exec(uri);
  return m ? { serverName: m[1]!, mediaId: m[2]! } : null;
}

/** The authenticated download URL (spec v1.11) of an mxc:// URI. */
export function downloadUrl(baseUrl: string, mxc: string): string | null {
  const p = parseMxc(mxc);
  if (!p) return null;
  return `${baseUrl}/_matrix/client/v1/media/download/${encodeURIComponent(p.serverName)}/${p.mediaId}`;
}

/** The authenticated thumbnail URL of an mxc:// URI, scaled to fit width x height. */
export function thumbnailUrl(baseUrl: string, mxc: string, width: number, height: number): string | null {
  const p = parseMxc(mxc);
  if (!p) return null;
  return `${baseUrl}/_matrix/client/v1/media/thumbnail/${encodeURIComponent(p.serverName)}/${p.mediaId}?width=${width}&height=${height}&method=scale`;
}

// Message content

/** Image types the client shows inline (never SVG, which can carry scripts and fetch resources). */
export const PREVIEWABLE_IMAGES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];

export interface ImageInfo {
  w: number;
  h: number;
}

/** What is known of the file when its message is built (the upload is done). */
export interface SentFile {
  name: string;
  mimetype: string;
  size: number;
  /** The image's size in pixels, when it is one the client could decode. */
  image: ImageInfo | null;
  /** Unencrypted: the mxc:// URI. */
  url?: string;
  /** Encrypted: the `file` object, with its url. */
  file?: EncryptedFile;
  /** A smaller image made by the sender (used in encrypted rooms, where the server cannot). */
  thumbnail?: { info: ImageInfo & { mimetype: string; size: number }; url?: string; file?: EncryptedFile };
}

/** The m.room.message content for a file: m.image for images the client shows, else m.file. */
export function fileMessageContent(f: SentFile): Record<string, unknown> {
  const isImage = f.image !== null && PREVIEWABLE_IMAGES.includes(f.mimetype);
  const info: Record<string, unknown> = { mimetype: f.mimetype, size: f.size };
  if (isImage && f.image) {
    info.w = f.image.w;
    info.h = f.image.h;
  }
  if (f.thumbnail) {
    info.thumbnail_info = f.thumbnail.info;
    if (f.thumbnail.file) info.thumbnail_file = f.thumbnail.file;
    else if (f.thumbnail.url) info.thumbnail_url = f.thumbnail.url;
  }
  return {
    msgtype: isImage ? 'm.image' : 'm.file',
    body: f.name,
    filename: f.name,
    info,
    ...(f.file ? { file: f.file } : { url: f.url }),
  };
}

/** A file message as the timeline shows it. */
export interface AttachmentView {
  kind: 'image' | 'file';
  name: string;
  /** The message's text when it differs from the file name (a caption). */
  caption: string | null;
  mimetype: string | null;
  size: number | null;
  width: number | null;
  height: number | null;
  /** Where the bytes are: an mxc:// URI, with the `file` object when they are encrypted. */
  source: { mxc: string; file: EncryptedFile | null };
  /** The sender's thumbnail, when there is one. */
  thumbnail: { mxc: string; file: EncryptedFile | null; mimetype: string | null } | null;
}

const FILE_TYPES = ['m.image', 'm.file', 'm.video', 'm.audio'];

function positiveInt(v: unknown): number | null {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : null;
}

/** The `file` object when it has every field the spec requires, with the types it requires. */
export function readEncryptedFile(v: unknown): EncryptedFile | null {
  if (typeof v !== 'object' || v === null) return null;
  const f = v as Record<string, unknown>;
  const key = f.key as Record<string, unknown> | null | undefined;
  const hashes = f.hashes as Record<string, unknown> | null | undefined;
  if (
    !parseMxc(f.url) ||
    f.v !== 'v2' ||
    typeof f.iv !== 'string' ||
    typeof key !== 'object' ||
    key === null ||
    key.kty !== 'oct' ||
    key.alg !== 'A256CTR' ||
    typeof key.k !== 'string' ||
    !Array.isArray(key.key_ops) ||
    !key.key_ops.includes('decrypt') ||
    typeof hashes !== 'object' ||
    hashes === null ||
    typeof hashes.sha256 !== 'string'
  ) {
    return null;
  }
  return {
    url: f.url as string,
    key: { kty: 'oct', key_ops: key.key_ops as string[], alg: 'A256CTR', k: key.k, ext: true },
    iv: f.iv,
    hashes: { sha256: hashes.sha256 },
    v: 'v2',
  };
}

/**
 * Reads an m.image / m.file / m.video / m.audio content; null for other messages and for file
 * messages without a usable source (no mxc:// URI, or a `file` object that lacks a field).
 */
export function attachmentOf(content: Record<string, unknown>): AttachmentView | null {
  if (typeof content.msgtype !== 'string' || !FILE_TYPES.includes(content.msgtype)) return null;
  const file = content.file === undefined ? null : readEncryptedFile(content.file);
  const mxc = file ? file.url : parseMxc(content.url) ? (content.url as string) : null;
  if (!mxc) return null;
  const info = (typeof content.info === 'object' && content.info !== null ? content.info : {}) as Record<
    string,
    unknown
  >;
  const body = typeof content.body === 'string' ? content.body : '';
  const filename = typeof content.filename === 'string' && content.filename ? content.filename : null;
  const mimetype = typeof info.mimetype === 'string' ? info.mimetype.toLowerCase() : null;
  const thumbInfo = (typeof info.thumbnail_info === 'object' && info.thumbnail_info) as Record<
    string,
    unknown
  > | null;
  const thumbFile = info.thumbnail_file === undefined ? null : readEncryptedFile(info.thumbnail_file);
  const thumbMxc = thumbFile
    ? thumbFile.url
    : parseMxc(info.thumbnail_url)
      ? (info.thumbnail_url as string)
      : null;
  const thumbType =
    thumbInfo && typeof thumbInfo.mimetype === 'string' ? thumbInfo.mimetype.toLowerCase() : null;
  return {
    kind: content.msgtype === 'm.image' ? 'image' : 'file',
    name: (filename ?? body) || 'file',
    caption: filename && body && body !== filename ? body : null,
    mimetype,
    size: positiveInt(info.size),
    width: positiveInt(info.w),
    height: positiveInt(info.h),
    source: { mxc, file },
    thumbnail: thumbMxc ? { mxc: thumbMxc, file: thumbFile, mimetype: thumbType } : null,
  };
}

/** Whether the client shows this attachment inline: an image of a type it decodes safely. */
export function isPreviewable(a: AttachmentView): boolean {
  return a.kind === 'image' && a.mimetype !== null && PREVIEWABLE_IMAGES.includes(a.mimetype);
}

// Upload errors

export type UploadError =
  | { kind: 'too-large'; limit: number | null }
  | { kind: 'quota' }
  | { kind: 'rate-limited' }
  | { kind: 'unavailable' }
  | { kind: 'network' }
  | { kind: 'other'; message: string };

/** What a refused upload means to the user, from the status and the Matrix error body. */
export function uploadErrorOf(status: number, body: unknown, limit: number | null): UploadError {
  const errcode = typeof body === 'object' && body !== null ? (body as { errcode?: unknown }).errcode : null;
  const error = typeof body === 'object' && body !== null ? (body as { error?: unknown }).error : null;
  if (status === 0) return { kind: 'network' };
  if (errcode === 'M_TOO_LARGE' || status === 413) return { kind: 'too-large', limit };
  if (errcode === 'M_RESOURCE_LIMIT_EXCEEDED') return { kind: 'quota' };
  if (errcode === 'M_LIMIT_EXCEEDED' || status === 429) return { kind: 'rate-limited' };
  if (errcode === 'M_UNRECOGNIZED' || status === 404) return { kind: 'unavailable' };
  return { kind: 'other', message: typeof error === 'string' ? error : `HTTP ${status}` };
}

/**
 * A byte count for people, in SI units (kB = 1000 bytes, as the unit names say): one decimal
 * below 10 of a unit, none above, in the UI's language.
 */
export function formatBytes(bytes: number, language: string): string {
  const units = ['byte', 'kilobyte', 'megabyte', 'gigabyte'] as const;
  let value = bytes;
  let i = 0;
  while (value >= 1000 && i < units.length - 1) {
    value /= 1000;
    i++;
  }
  return new Intl.NumberFormat(language, {
    style: 'unit',
    unit: units[i],
    // "12 bytes" / "12 octets"; "1.5 MB" / "1,5 Mo".
    unitDisplay: i === 0 ? 'long' : 'short',
    maximumFractionDigits: i > 0 && value < 10 ? 1 : 0,
  }).format(value);
}
